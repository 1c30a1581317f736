"""Where the tests, tools and benchmarks of a source checkout find things.

``REPO_ROOT`` is the checkout that holds this package (``fuller/testing``
two levels down); it names configs and scripts, so it is meaningful for a
source checkout or an editable install, not for a wheel.

Real nuScenes frames (two keyframes, infos, tables; see
../shared/nuscenes-real/README.md): one setting, the folder named by
``$FULLER_REAL_NUSCENES``, by default ``shared/nuscenes-real`` beside the
repository. Tests reach it through the ``real_nuscenes_root`` fixture of
tests/conftest.py, which skips them when the folder is absent, unless
``$FULLER_REQUIRE_REAL_NUSCENES=1`` (set by .ci/run) makes that a failure.
"""
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Union

REPO_ROOT = Path(__file__).resolve().parents[2]

REAL_NUSCENES_ENV = 'FULLER_REAL_NUSCENES'
REQUIRE_REAL_NUSCENES_ENV = 'FULLER_REQUIRE_REAL_NUSCENES'
SHARED_REAL = Path(os.environ.get(REAL_NUSCENES_ENV)
                   or REPO_ROOT.parent / 'shared' / 'nuscenes-real').resolve()


def real_nuscenes_missing() -> str:
    """Why the real frames cannot be used ('' when they can)."""
    if not SHARED_REAL.is_dir():
        return f'{SHARED_REAL} does not exist'
    if not (SHARED_REAL / 'infos' / 'sample_a_infos_v2.pkl').is_file():
        return f'{SHARED_REAL} has no infos/sample_a_infos_v2.pkl'
    return ''


def load_script(path: Union[str, Path], name: str) -> ModuleType:
    """Import a script that is not a package module (``tools/*.py``) from
    its file, as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

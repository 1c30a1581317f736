"""Shared pytest fixtures for fuller's tests."""
import importlib.util
import os
import warnings
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Real nuScenes frames (two keyframes, infos, tables; see ../shared/nuscenes-real/README.md).
# One setting: the folder named by $FULLER_REAL_NUSCENES, by default shared/nuscenes-real beside
# the repository. Tests reach it only through the `real_nuscenes_root` fixture, which skips them
# when the folder is absent, unless $FULLER_REQUIRE_REAL_NUSCENES=1 (set by .ci/run) makes that a
# failure.
REAL_NUSCENES_ENV = 'FULLER_REAL_NUSCENES'
REQUIRE_REAL_NUSCENES_ENV = 'FULLER_REQUIRE_REAL_NUSCENES'
SHARED_REAL = Path(os.environ.get(REAL_NUSCENES_ENV)
                   or REPO_ROOT.parent / 'shared' / 'nuscenes-real').resolve()

os.environ.setdefault('PYTHONWARNINGS', 'ignore::UserWarning')
warnings.filterwarnings('ignore', category=UserWarning)


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO_ROOT


def load_script(path, name: str):
    """Import a script that is not a package module (``tools/*.py``) from
    its file, as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def real_nuscenes_missing() -> str:
    """Why the real frames cannot be used ('' when they can)."""
    if not SHARED_REAL.is_dir():
        return f'{SHARED_REAL} does not exist'
    if not (SHARED_REAL / 'infos' / 'sample_a_infos_v2.pkl').is_file():
        return f'{SHARED_REAL} has no infos/sample_a_infos_v2.pkl'
    return ''


@pytest.fixture(scope='session')
def real_nuscenes_root() -> Path:
    """The folder of real nuScenes frames; skips the test when it is absent
    (fails instead when $FULLER_REQUIRE_REAL_NUSCENES=1, as in CI)."""
    missing = real_nuscenes_missing()
    if missing:
        how = (f'real nuScenes frames not found ({missing}): put the folder at '
               f'../shared/nuscenes-real beside the repository or set '
               f'{REAL_NUSCENES_ENV}=/path/to/nuscenes-real')
        if os.environ.get(REQUIRE_REAL_NUSCENES_ENV) == '1':
            pytest.fail(f'{how} ({REQUIRE_REAL_NUSCENES_ENV}=1: required here)',
                        pytrace=False)
        pytest.skip(how)
    return SHARED_REAL


@pytest.fixture(scope='session')
def synthetic_dataroot(tmp_path_factory) -> Path:
    """A small generated nuScenes-format dataroot (2 scenes: one mini_train,
    one mini_val) with infos and the map-mask cache, as `make demo` makes."""
    from fuller.data_prep import (create_nuscenes_data,
                                  generate_synthetic_nuscenes)
    root = tmp_path_factory.mktemp('nuscenes-synthetic') / 'data'
    generate_synthetic_nuscenes(str(root), num_scenes=2, keyframes_per_scene=4,
                                sweeps_per_keyframe=2, image_size=(352, 198),
                                seed=0)
    create_nuscenes_data(str(root), str(root), 'v1.0-mini', progress=False)
    return root

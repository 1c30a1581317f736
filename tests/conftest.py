"""Shared pytest fixtures for fuller's tests."""
import os
import warnings
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real nuScenes frames live beside the repository (see ../shared/nuscenes-real/README.md).
SHARED_REAL = REPO_ROOT.parent / 'shared' / 'nuscenes-real'

os.environ.setdefault('PYTHONWARNINGS', 'ignore::UserWarning')
warnings.filterwarnings('ignore', category=UserWarning)


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope='session')
def real_nuscenes_root() -> Path:
    if not SHARED_REAL.is_dir():
        raise FileNotFoundError(
            f'{SHARED_REAL} is missing: the real nuScenes frames must lie in '
            'shared/nuscenes-real beside the repository')
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

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

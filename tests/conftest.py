"""Shared pytest fixtures for fuller's tests.

Helpers that test modules import (paths, script loading, input and model
builders, multi-process runs) live in :mod:`fuller.testing`; test modules
never import this file (pytest loads it by itself).
"""
import os
from pathlib import Path

import pytest

from fuller.testing.repo import (REAL_NUSCENES_ENV, REPO_ROOT,
                                 REQUIRE_REAL_NUSCENES_ENV, SHARED_REAL,
                                 real_nuscenes_missing)


def pytest_configure(config):
    """The third-party warnings fuller silences, as pytest filters (pytest
    resets the warning filters for every test)."""
    from fuller.compat.third_party_warnings import pytest_filter_lines
    for line in pytest_filter_lines():
        config.addinivalue_line('filterwarnings', line)


@pytest.fixture(scope='module')
def one_thread():
    """One CPU thread for a whole module (``pytestmark =
    pytest.mark.usefixtures('one_thread')``); see fuller.testing.one_thread."""
    from fuller.testing import one_thread as single_thread
    with single_thread():
        yield


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO_ROOT


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

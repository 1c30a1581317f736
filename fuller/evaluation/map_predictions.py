"""Saved BEV map predictions: one file per sample, and a folder index.

Shape shorthand: M map classes, Y rows (y cells), X columns (x cells).

Frame: the map grid of the sample's keyframe LiDAR frame, the grid of the
cached ground truth (``fuller.datasets.map_mask_io``): cell ``(iy, ix)``
covers ``[x_min + ix*dx, x_min + (ix+1)*dx) x [y_min + iy*dy, ...)``
(``fuller.structures.BEVGrid``).

Folder layout::

    <dir>/index.json          {"format": "fuller-map-predictions",
                               "format_version": 1, "scale": 200,
                               "class_names": [...], "grid": {"x_range": [..],
                               "y_range": [..], "cell_size": [dx, dy]},
                               "shape": [M, Y, X], "tokens": [...]}
    <dir>/<sample token>.npz  compressed npz: ``q`` uint8 (M, Y, X),
                              ``class_names`` str (M,), ``grid`` float64
                              (6,) = x_min, x_max, y_min, y_max, dx, dy,
                              ``scale`` int64, ``format_version`` int64

Quantisation (``scale = 200``): ``q`` is the largest ``k`` in 0..scale with
``p >= float32(k / scale)`` (``p`` float32, as the head outputs it), read
back as ``p' = float32(q / scale)``; so ``q ~ floor(p * scale)`` and
``0 <= p - p' < 1 / scale``. For a threshold ``t`` that is a multiple of
``1 / scale`` (every threshold of ``BEVMapIoUMetric``: 0.35 to 0.65 by
0.05), ``p' >= t`` exactly when ``p >= t`` in float32, so the saved folder
scores exactly the in-loop IoU at those thresholds.
"""
import json
import os
import os.path as osp
import zipfile
from typing import Dict, Sequence, Tuple

import numpy as np

from fuller.utils.io import atomic_open

FORMAT = 'fuller-map-predictions'
FORMAT_VERSION = 1
SCALE = 200
INDEX_FILE = 'index.json'


class MapPredictionFileError(ValueError):
    """A map-prediction file or folder cannot be used."""


def grid_vector(grid: dict) -> np.ndarray:
    """``dict(x_range, y_range, cell_size)`` -> (6,) float64."""
    cell = grid['cell_size']
    dx, dy = (cell, cell) if np.isscalar(cell) else tuple(cell)
    return np.array([*grid['x_range'], *grid['y_range'], dx, dy],
                    dtype=np.float64)


def _levels(scale: int) -> np.ndarray:
    """float32 ``k / scale`` for k = 0..scale, strictly increasing."""
    return (np.arange(scale + 1) / scale).astype(np.float32)


def quantise(probs: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """(M, Y, X) probabilities -> uint8 codes: the largest ``k`` with
    ``p >= float32(k / scale)``, compared in float32 as the metric does."""
    probs = np.asarray(probs, dtype=np.float32)
    if not np.isfinite(probs).all():
        raise ValueError('map probabilities hold non-finite values')
    codes = np.searchsorted(_levels(scale), probs, side='right') - 1
    return np.clip(codes, 0, scale).astype(np.uint8)


def dequantise(q: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """uint8 codes -> float32 probabilities ``float32(q / scale)``."""
    return _levels(scale)[q]


def save_map_prediction(path: str, probs: np.ndarray,
                        class_names: Sequence[str], grid: dict) -> None:
    """Atomically write one sample's (M, Y, X) probabilities."""
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] != len(class_names):
        raise ValueError(f'{path}: probabilities {probs.shape} must be '
                         f'({len(class_names)}, Y, X)')
    with atomic_open(path, 'wb') as f:
        np.savez_compressed(
            f, q=quantise(probs), class_names=np.asarray(class_names, np.str_),
            grid=grid_vector(grid), scale=np.int64(SCALE),
            format_version=np.int64(FORMAT_VERSION))


def load_map_prediction(path: str) -> Tuple[np.ndarray, tuple, np.ndarray]:
    """-> (float32 (M, Y, X) probabilities, class names, (6,) grid)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'map prediction {path} not found')
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise MapPredictionFileError(f'map prediction {path} is corrupt '
                                     f'({err})') from err
    missing = [k for k in ('q', 'class_names', 'grid', 'scale',
                           'format_version') if k not in data]
    if missing:
        raise MapPredictionFileError(f'map prediction {path} lacks '
                                     f'{missing}')
    if int(data['format_version']) != FORMAT_VERSION:
        raise MapPredictionFileError(
            f'map prediction {path} has format version '
            f'{int(data["format_version"])}, expected {FORMAT_VERSION}')
    q, names = data['q'], tuple(str(n) for n in data['class_names'])
    if q.dtype != np.uint8 or q.ndim != 3 or q.shape[0] != len(names):
        raise MapPredictionFileError(f'map prediction {path}: q {q.dtype}'
                                     f'{q.shape} for {len(names)} classes')
    return dequantise(q, int(data['scale'])), names, data['grid']


def write_index(folder: str, tokens: Sequence[str],
                class_names: Sequence[str], grid: dict,
                shape: Sequence[int]) -> str:
    """Write ``<folder>/index.json`` (atomically) and return its path."""
    index = dict(format=FORMAT, format_version=FORMAT_VERSION, scale=SCALE,
                 class_names=list(class_names),
                 grid=dict(x_range=list(map(float, grid['x_range'])),
                           y_range=list(map(float, grid['y_range'])),
                           cell_size=grid_vector(grid)[4:].tolist()),
                 shape=[int(s) for s in shape], tokens=sorted(tokens))
    path = osp.join(folder, INDEX_FILE)
    with atomic_open(path) as f:
        json.dump(index, f, indent=1)
    return path


def read_index(folder: str) -> Dict:
    """The folder's index, checked for format and version."""
    path = osp.join(folder, INDEX_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} not found: not a map-prediction '
                                f'folder written by tools/test.py')
    with open(path) as f:
        index = json.load(f)
    if index.get('format') != FORMAT or \
            index.get('format_version') != FORMAT_VERSION:
        raise MapPredictionFileError(
            f'{path}: format {index.get("format")!r} version '
            f'{index.get("format_version")!r}, expected {FORMAT!r} '
            f'{FORMAT_VERSION}')
    return index


def prediction_path(folder: str, token: str) -> str:
    return os.path.join(folder, f'{token}.npz')

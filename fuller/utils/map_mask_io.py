"""Packed on-disk cache of BEV map masks (the format both the offline writer,
``fuller.data_prep.bev_map_masks``, and the runtime loader, ``LoadBEVMapMasks``,
use; it lives below both, and ``fuller.datasets.map_mask_io`` is this module).

Shape shorthand: C map classes, Y rows (y cells), X columns (x cells).

One file per sample, written by the preprocessing step and read by the
``LoadBEVMapMasks`` transform at train time (no nuScenes devkit needed then).
The masks are on a BEV grid in the (un-augmented) LiDAR frame of the sample:
``masks[c, iy, ix]`` is True when cell (iy, ix) belongs to class c (see
``fuller.structures.BEVGrid`` for the cell layout).

File format (a compressed ``.npz``, format version 1):

- ``bits``: uint8, ``np.packbits`` of the C-order flattened (C, Y, X) masks.
- ``shape``: int64 (3,), the (C, Y, X) shape.
- ``class_names``: unicode (C,), the class of each channel, in order.
- ``format_version``: int64 scalar.
- ``rasteriser_version``: int64 scalar, the version of the code that drew
  the masks (``MAP_RASTERISER_VERSION``). Absent in files of version 1 (a
  scanline fill of cell centres, one cell thinner than the devkit along
  every boundary); version 2 equals nuscenes-devkit's ``get_map_mask``
  cell for cell. Files of another version are refused (stale cache), and
  ``tools/create_data.py`` rewrites them.

Public API (stable):

- ``save_map_masks(path, masks_bool, class_names=MAP_CLASSES) -> None``
- ``load_map_masks(path, class_names=MAP_CLASSES) -> np.ndarray``, (C, Y, X)
  bool
- ``read_map_mask_class_names(path) -> tuple of str``
- ``MAP_RASTERISER_VERSION``; ``StaleMapMaskError`` (a ``MapMaskFileError``)
"""
import os
import zipfile
from typing import Optional, Sequence, Tuple

import numpy as np

from ..structures.nuscenes_world import MAP_CLASSES
from .io import atomic_open

MAP_MASK_FORMAT_VERSION = 1
# Bump whenever the masks drawn for the same map and pose change.
MAP_RASTERISER_VERSION = 2
_KEYS = ('bits', 'shape', 'class_names', 'format_version')
_RASTERISER_KEY = 'rasteriser_version'
_REBUILD_COMMAND = ('python tools/create_data.py nuscenes --root-path '
                    '<dataroot> --out-dir <out-dir> --version <version>')
_REGENERATE = f'regenerate the cache with `{_REBUILD_COMMAND}`'


class MapMaskFileError(ValueError):
    """A map-mask cache file exists but cannot be used."""


class StaleMapMaskError(MapMaskFileError):
    """A cache file drawn by another map rasteriser version."""


def save_map_masks(path: str,
                   masks_bool: np.ndarray,
                   class_names: Sequence[str] = MAP_CLASSES) -> None:
    """Atomically write (C, Y, X) boolean masks to ``path`` (a .npz file).

    Args:
        path: the .npz file to write.
        masks_bool: (C, Y, X) bool masks, rows y and columns x of the map
            grid (keyframe LiDAR frame).
        class_names: the C class names, in channel order; stored with the
            masks.

    The data go to a temporary file in the same directory first and are
    moved into place with ``os.replace``, so a reader never sees a partial
    file. Parent directories are created.
    """
    masks = np.asarray(masks_bool)
    if masks.dtype != np.bool_:
        raise TypeError(f'save_map_masks({path!r}): masks must be bool, '
                        f'got {masks.dtype}')
    if masks.ndim != 3:
        raise ValueError(f'save_map_masks({path!r}): masks must be '
                         f'(C, Y, X), got shape {masks.shape}')
    class_names = tuple(str(n) for n in class_names)
    if len(class_names) != masks.shape[0]:
        raise ValueError(
            f'save_map_masks({path!r}): {len(class_names)} class names '
            f'for {masks.shape[0]} mask channels')
    payload = dict(bits=np.packbits(np.ascontiguousarray(masks).reshape(-1)),
                   shape=np.asarray(masks.shape, dtype=np.int64),
                   class_names=np.asarray(class_names, dtype=np.str_),
                   format_version=np.int64(MAP_MASK_FORMAT_VERSION),
                   rasteriser_version=np.int64(MAP_RASTERISER_VERSION))
    with atomic_open(path, 'wb') as f:
        np.savez_compressed(f, **payload)


def _read_npz(path: str) -> dict:
    """Read all arrays of a cache file; errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'Map-mask cache file not found: {path}; {_REGENERATE}')
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise MapMaskFileError(
                    f'Map-mask cache file {path} lacks {missing}; it is not '
                    f'a fuller map-mask file; {_REGENERATE}')
            data = {k: npz[k] for k in _KEYS}
            data[_RASTERISER_KEY] = (npz[_RASTERISER_KEY] if _RASTERISER_KEY
                                     in npz.files else np.int64(1))
            return data
    except MapMaskFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile,
            zipfile.LargeZipFile) as err:
        raise MapMaskFileError(
            f'Map-mask cache file {path} is corrupt or truncated '
            f'({type(err).__name__}: {err}); {_REGENERATE}') from err


def check_rasteriser_version(path: str, version: int) -> None:
    """Refuse masks drawn by another rasteriser version (stale cache)."""
    if version != MAP_RASTERISER_VERSION:
        raise StaleMapMaskError(
            f'Map-mask cache file {path} was drawn by map rasteriser version '
            f'{version}, but this fuller needs version '
            f'{MAP_RASTERISER_VERSION} (masks equal to nuscenes-devkit '
            f'get_map_mask); the cache is stale. Rebuild it with '
            f'`{_REBUILD_COMMAND}` (same arguments as when it was made): '
            f'stale mask files are rewritten, current ones kept')


def read_map_mask_class_names(path: str) -> Tuple[str, ...]:
    """The class names stored in the cache file ``path`` (a .npz written by
    :func:`save_map_masks`), in channel order."""
    return tuple(str(n) for n in _read_npz(path)['class_names'])


def load_map_masks(
        path: str,
        class_names: Optional[Sequence[str]] = MAP_CLASSES) -> np.ndarray:
    """Read a cache file written by :func:`save_map_masks`.

    Args:
        path: the .npz file.
        class_names: the classes to return, in this order (a subset of the
            stored ones is fine). ``None`` returns every stored channel.

    Returns:
        np.ndarray: (C, Y, X) bool.

    Raises:
        FileNotFoundError: the file does not exist.
        StaleMapMaskError: the masks were drawn by another rasteriser
            version (the message says how to rebuild the cache).
        MapMaskFileError: the file is corrupt, truncated, of another format
            version, or lacks a requested class.
    """
    data = _read_npz(path)
    version = int(data['format_version'])
    if version != MAP_MASK_FORMAT_VERSION:
        raise MapMaskFileError(
            f'Map-mask cache file {path} has format version {version}, '
            f'expected {MAP_MASK_FORMAT_VERSION}; {_REGENERATE}')
    check_rasteriser_version(path, int(data[_RASTERISER_KEY]))
    shape = tuple(int(s) for s in data['shape'])
    stored = tuple(str(n) for n in data['class_names'])
    bits = data['bits']
    if (len(shape) != 3 or min(shape) < 0 or len(stored) != shape[0]
            or bits.dtype != np.uint8 or bits.ndim != 1):
        raise MapMaskFileError(
            f'Map-mask cache file {path} is inconsistent: shape {shape}, '
            f'{len(stored)} class names, bits {bits.dtype}{bits.shape}; '
            f'{_REGENERATE}')
    count = int(np.prod(shape))
    if bits.size != (count + 7) // 8:
        raise MapMaskFileError(
            f'Map-mask cache file {path} holds {bits.size} bytes of mask '
            f'bits, expected {(count + 7) // 8} for shape {shape}; '
            f'{_REGENERATE}')
    masks = np.unpackbits(bits, count=count).reshape(shape).view(np.bool_)
    if class_names is None:
        return masks
    missing = [n for n in class_names if n not in stored]
    if missing:
        raise MapMaskFileError(
            f'Map-mask cache file {path} has classes {list(stored)}, '
            f'not {missing}; {_REGENERATE}')
    order = [stored.index(n) for n in class_names]
    if order == list(range(len(stored))):
        return masks
    return masks[order]

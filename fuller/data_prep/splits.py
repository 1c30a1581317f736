"""nuScenes scene splits: this name is :mod:`fuller.structures.nuscenes_splits`
(the same module object), kept for existing imports; evaluation reads the
splits from there without importing data preparation."""
import sys

from ..structures import nuscenes_splits as _module

sys.modules[__name__] = _module

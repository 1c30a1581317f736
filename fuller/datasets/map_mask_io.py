"""The map-mask cache format: this name is :mod:`fuller.utils.map_mask_io`
(the same module object), kept for existing imports. The format lives below
both the offline writer (``fuller.data_prep``) and this runtime package, so
neither imports the other."""
import sys

from ..utils import map_mask_io as _module

sys.modules[__name__] = _module

"""fuller: multi-modal multi-task 3D perception (FULLER on BEVFusion).

Importing this package registers every fuller module into mmdet3d's
registries, so configs only need ``custom_imports = dict(imports=['fuller'])``.
It also allow-lists the globals of mmengine checkpoints for torch's
``weights_only`` loader (see :mod:`fuller.compat.checkpoint`).
"""
from .version import __version__  # noqa: F401
from . import compat  # noqa: F401  (environment fixes; import first)
from . import (calibration, datasets, engine, evaluation, models,  # noqa: F401
               structures)

compat.register_checkpoint_safe_globals()

"""fuller: multi-modal multi-task 3D perception (FULLER on BEVFusion).

Importing this package makes every fuller module available to mmdet3d's
registries, so configs only need ``custom_imports = dict(imports=['fuller'])``.
The modules that register classes (:data:`REGISTERING_PACKAGES`) are added
to the import ``locations`` of mmdet3d's registries, mmengine's mechanism for
mmdet3d's own modules: they are imported the first time one of those
registries is asked for a name (``MODELS.build(...)``, ``Runner.from_cfg``),
together with mmdet3d's models and with spconv (seconds). ``import fuller``
itself therefore costs little more than torch and mmengine, which keeps
tools that never build a module (``--help``, data preparation, report
writing) fast. If a registry was queried before fuller was imported, the
packages are imported at once instead.

It also allow-lists the globals of mmengine checkpoints for torch's
``weights_only`` loader (see :mod:`fuller.compat.checkpoint`).
"""
import importlib

from .version import __version__  # noqa: F401
from . import compat  # noqa: F401  (environment fixes; import first)

# fuller's packages that register classes, and the mmdet3d registries they register into
REGISTERING_PACKAGES = ('fuller.models', 'fuller.datasets', 'fuller.evaluation.metrics',
                        'fuller.engine', 'fuller.calibration')
REGISTRIES = ('MODELS', 'TASK_UTILS', 'DATASETS', 'TRANSFORMS', 'METRICS',
              'HOOKS', 'LOOPS', 'MODEL_WRAPPERS')


def import_registering_packages() -> None:
    """Import every package of :data:`REGISTERING_PACKAGES` now."""
    for name in REGISTERING_PACKAGES:
        importlib.import_module(name)


def _register_locations() -> None:
    from mmdet3d import registry
    targets = [getattr(registry, name) for name in REGISTRIES]
    # mmengine 0.10's Registry imports `_locations` once, on its first query (`_imported`)
    if any(getattr(r, '_imported', True) or not hasattr(r, '_locations')
           for r in targets):
        import_registering_packages()
        return
    for reg in targets:
        for name in REGISTERING_PACKAGES:
            if name not in reg._locations:
                reg._locations.append(name)


_register_locations()
compat.register_checkpoint_safe_globals()

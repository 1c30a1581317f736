"""ConfigCheckHook: the geometry / channel consistency check of
``fuller.utils.config_utils`` under a plain mmengine ``Runner``.

fuller's own tools check a config when they load it; mmdet3d's
``tools/train.py`` / ``tools/test.py`` and ``Runner.from_cfg`` do not know
about fuller, so ``configs/_base_/default_runtime.py`` lists this hook among
the default hooks (a dict, so child configs keep it when they add hooks).
It runs before the first iteration of ``train()``, ``val()`` and ``test()``
and stops the run with the list of disagreeing keys.
"""
from mmengine.hooks import Hook

from mmdet3d.registry import HOOKS

from ...utils.config_utils import check_config_consistency


@HOOKS.register_module()
class ConfigCheckHook(Hook):
    """Raise ``ConfigConsistencyError`` at ``before_run`` when the runner's
    config disagrees with its declared ``geometry`` / ``channels`` /
    ``data_root`` / ``modality`` (a runner built without a config has
    nothing to check)."""

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        cfg = getattr(runner, 'cfg', None)
        if cfg is not None and len(cfg):
            check_config_consistency(cfg)

"""Every public class and function of fuller is documented (``api_docs``):
registered in mmdet3d's registries or exported by a package that
``fuller/__init__.py`` imports."""
import api_docs


def test_public_api_is_found():
    names = api_docs.public_objects()
    # registered (MODELS, HOOKS, METRICS, TRANSFORMS) and exported functions
    for name in ('fuller.models.fusers.conv_fuser.ConvFuser',
                 'fuller.calibration.calibration_hook.GradientCalibrationHook',
                 'fuller.evaluation.metrics.bev_map_iou_metric.BEVMapIoUMetric',
                 'fuller.datasets.transforms.loading.LoadBEVMapMasks',
                 'fuller.calibration.task_weights.compute_task_weights',
                 'fuller.calibration.step_scaling.group_parameters'):
        assert name in names
    assert {'fuller.compat', 'fuller.models'} <= set(api_docs.top_packages())


def test_public_classes_and_functions_have_docstrings():
    missing = api_docs.undocumented()
    assert not missing, 'public objects whose docstring lacks something:\n' + \
        '\n'.join(f'{name}: {"; ".join(problems)}' for name, problems in missing)


def test_missing_docs_reports_each_gap():
    def no_doc(x):
        return x

    def half_doc(points, grid):
        """Project ``points`` (P, 3)."""

    class Layer:
        """A layer; forward maps (B, C) to (B, C).

        Args:
            width: C.
        """

        def __init__(self, width, depth, init_cfg=None):
            pass

    assert api_docs.missing_docs('no_doc', no_doc) == ['no docstring']
    assert api_docs.missing_docs('half_doc', half_doc) == \
        ['arguments not described: grid']
    assert api_docs.missing_docs('Layer', Layer) == \
        ['arguments not described: depth']

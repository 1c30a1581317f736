"""MultiTaskBEVFusion built from the tiny config: loss / predict / tensor
modes, modality and task switches, learning on a fixed batch, errors."""
import copy

import pytest
import torch
from fuller.utils.config_utils import load_config
from mmengine.registry import init_default_scope

import fuller  # noqa: F401
from fuller.testing import make_multitask_batch
from mmdet3d.registry import MODELS
from mmdet3d.structures import LiDARInstance3DBoxes
from fuller.testing import REPO_ROOT

TINY = REPO_ROOT / 'configs' / '_base_' / 'models' / \
    'bevfusion_multitask_tiny.py'


def tiny_model_cfg():
    init_default_scope('mmdet3d')
    return copy.deepcopy(load_config(str(TINY)).model)


def build(cfg):
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def make_batch(model, seeds=(0, 1), training=True, num_boxes=2):
    return make_multitask_batch(model, seeds, training, num_boxes=num_boxes)


@pytest.fixture(scope='module')
def tiny_model():
    return build(tiny_model_cfg())


def test_loss_has_per_task_prefixed_finite_terms(tiny_model):
    losses = tiny_model(**make_batch(tiny_model), mode='loss')
    assert {k.split('/')[0] for k in losses} == {'det', 'seg'}
    assert 'det/loss_heatmap' in losses and 'seg/loss_divider' in losses
    for k, v in losses.items():
        assert torch.isfinite(v).all(), k


def test_every_parameter_receives_a_gradient(tiny_model):
    tiny_model.train()
    tiny_model.zero_grad()
    losses = tiny_model(**make_batch(tiny_model), mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    missing = [n for n, p in tiny_model.named_parameters()
               if p.requires_grad and (p.grad is None or
                                       not torch.isfinite(p.grad).all())]
    assert not missing, missing[:10]
    for branch in ('img_backbone', 'view_transform', 'pts_middle_encoder',
                   'fuser', 'decoder'):
        total = sum(p.grad.abs().sum() for n, p in
                    tiny_model.named_parameters() if n.startswith(branch))
        assert total > 0, branch


def test_predict_returns_lidar_boxes_and_masks(tiny_model):
    tiny_model.eval()
    with torch.no_grad():
        out = tiny_model(**make_batch(tiny_model, training=False),
                         mode='predict')
    assert len(out) == 2
    for sample in out:
        pred = sample.pred_instances_3d
        assert isinstance(pred.bboxes_3d, LiDARInstance3DBoxes)
        assert pred.bboxes_3d.tensor.shape[1] == 9  # with velocity
        assert len(pred.scores_3d) == len(pred.labels_3d) == len(
            pred.bboxes_3d)
        assert sample.pred_masks_bev.shape == (6, 200, 200)
        assert 0 <= sample.pred_masks_bev.min() <= \
            sample.pred_masks_bev.max() <= 1


def test_tensor_mode_exposes_shared_bev(tiny_model):
    with torch.no_grad():
        out = tiny_model(**make_batch(tiny_model, training=False),
                         mode='tensor')
    # tiny config: 90 x 90 BEV cells of 1.2 m over [-54, 54] m
    assert out['shared_bev'].shape[-2:] == (90, 90)


@pytest.mark.parametrize('drop', ['camera', 'lidar'])
def test_single_modality(drop):
    cfg = tiny_model_cfg()
    if drop == 'camera':
        for key in ('img_backbone', 'img_neck', 'view_transform'):
            cfg[key] = None
    else:
        cfg.pts_voxel_encoder = None
        cfg.pts_middle_encoder = None
    cfg.fuser = None
    cfg.decoder.backbone.in_channels = 64 if drop == 'camera' else 32
    model = build(cfg)
    assert model.with_camera == (drop != 'camera')
    assert model.with_lidar == (drop != 'lidar')
    losses = model(**make_batch(model), mode='loss')
    assert all(torch.isfinite(v).all() for v in losses.values())


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_single_task(task):
    cfg = tiny_model_cfg()
    cfg['seg_head' if task == 'det' else 'det_head'] = None
    model = build(cfg)
    assert model.tasks == [task]
    losses = model(**make_batch(model), mode='loss')
    assert {k.split('/')[0] for k in losses} == {task}
    model.eval()
    with torch.no_grad():
        out = model(**make_batch(model, training=False), mode='predict')
    assert hasattr(out[0], 'pred_masks_bev') == (task == 'seg')


def test_fixed_batch_loss_decreases():
    cfg = tiny_model_cfg()
    cfg.grad_calibrator = dict(task_method='imtl_g')
    model = build(cfg)
    model.train()
    batch = make_batch(model, seeds=(3, ))
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def total():
        return sum(v for k, v in model(**batch, mode='loss').items()
                   if 'loss' in k)

    first = None
    for _ in range(6):
        optim.zero_grad()
        loss = total()
        first = float(loss.detach()) if first is None else first
        loss.backward()
        optim.step()
    with torch.no_grad():
        last = float(total())
    assert last < 0.8 * first, (first, last)


def test_build_errors_are_clear():
    cfg = tiny_model_cfg()
    cfg.det_head = None
    cfg.seg_head = None
    with pytest.raises(ValueError, match='no task head'):
        build(cfg)
    cfg = tiny_model_cfg()
    cfg.fuser = None
    with pytest.raises(ValueError, match='need a fuser'):
        build(cfg)
    cfg = tiny_model_cfg()
    cfg.seg_head.input_grid = dict(x_range=(-54, 54), y_range=(-54, 54),
                                   cell_size=0.6)
    with pytest.raises(ValueError, match='heads.seg disagree on the task map grid'):
        build(cfg)
    cfg = tiny_model_cfg()
    cfg.loss_weights = dict(occupancy=1.0)
    with pytest.raises(ValueError, match='unknown tasks'):
        build(cfg)


def test_nan_guard_names_task_and_samples(tiny_model):
    batch = make_batch(tiny_model)
    head = tiny_model.heads['seg']
    orig = head.loss
    head.loss = lambda *a: {k: v * float('nan')
                            for k, v in orig(*a).items()}
    try:
        with pytest.raises(FloatingPointError,
                           match=r"seg/loss_.*sample-0.*sample-1"):
            tiny_model(**batch, mode='loss')
    finally:
        head.loss = orig


def test_empty_scan_error(tiny_model):
    batch = make_batch(tiny_model)
    batch['inputs']['voxels']['coors'] = \
        batch['inputs']['voxels']['coors'][:0]
    with pytest.raises(ValueError, match='no LiDAR point'):
        tiny_model(**batch, mode='loss')


def test_user_config_swaps_in_centerhead():
    """The README's example: a config that inherits the tiny FULLER config
    and replaces the detection head with mmdet3d's CenterHead."""
    from mmdet3d.models.dense_heads import CenterHead
    init_default_scope('mmdet3d')
    cfg = load_config(str(REPO_ROOT / 'configs' / 'fuller' /
                          'fuller_tiny-centerhead_1xb2-24e_synthetic-nus.py'))
    assert 'num_proposals' not in cfg.model.det_head  # _delete_ worked
    model = build(cfg.model)
    assert isinstance(model.heads['det'], CenterHead)
    assert model.grad_calibrator is not None
    losses = model(**make_batch(model), mode='loss')
    assert any(k.startswith('det/') for k in losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(**make_batch(model, training=False), mode='predict')
    assert isinstance(out[0].pred_instances_3d.bboxes_3d, LiDARInstance3DBoxes)


def test_depth_lss_variant_gets_lidar_points():
    cfg = tiny_model_cfg()
    cfg.view_transform.type = 'DepthLSSViewTransform'
    model = build(cfg)
    assert model.view_transform.uses_points
    calls = []
    orig = model.view_transform.points_to_depth_map

    def spy(points, *args):
        calls.append(len(points))
        return orig(points, *args)

    model.view_transform.points_to_depth_map = spy
    losses = model(**make_batch(model), mode='loss')
    assert calls == [2]  # the batch's two point clouds reached the depth net
    assert all(torch.isfinite(v).all() for v in losses.values())

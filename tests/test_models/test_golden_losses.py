"""Golden values: every loss term of the heads and of the whole tiny model on
fixed hand-made batches under a fixed seed, pinned to values recorded once.

What is pinned (inputs made here, weights from ``torch.manual_seed(0)``):

* the TransFusion-style head of the tiny FULLER config (on a non-square
  60 x 90 grid), the map head of the same config and mmdet3d's CenterHead
  through configs/fuller/fuller_tiny-centerhead_*.py: each loss term on a
  seeded random BEV map and the two-object scene of
  test_head_targets_by_hand.py;
* the whole tiny model, one training step of FULLER
  (configs/fuller/fuller_tiny_*.py, calibration active as after warm-up) and
  one of the plain sum (configs/bevfusion/bevfusion_tiny_*.py) on two
  ``fuller.testing.make_multitask_sample`` samples: each loss term, the
  gradient norm reaching each part of the model, FULLER's task weights, and
  the total loss after the config's AdamW step.

Tolerances (constants below): loss terms rel 1e-4; gradient norms rel
2e-3; calibration statistics rel 1e-3; the total loss after the AdamW step
rel 5e-2 only, because AdamW's first step is lr * sign(g) per element and
turns rounding noise in near-zero gradients into whole steps. Measured on
the development machine, one thread against two: loss terms moved by under
1e-6, gradient norms and statistics by under 4e-4, the loss after the step
by 8e-3 (plain sum) and 5e-4 (FULLER). Every test runs with one thread
(``torch.set_num_threads(1)``), so a change of machine, not of thread
count, is what the margins absorb. Should only the detection head's
loss_cls / loss_bbox move on another machine, suspect a Hungarian matching
tie broken the other way by rounding (see test_dist_equals_single.py)
before a change in the code.

The values below are recorded, not derived: they catch any change of what
the model computes (a loss weight, a target radius, a box convention, a
calibration rule). What a formula gives by hand (targets and losses of
the same detection head on hand-made predictions) is checked in
test_head_targets_by_hand.py.

Updating a golden value on purpose (a change that should alter a loss):

1. make the change, then run
   ``.venv/bin/python -m pytest tests/test_models/test_golden_losses.py -q``;
2. each failure lists, per key, the recorded and the measured value, and
   the whole measured dict as a Python literal;
3. check that only the keys the change should move have moved, and by the
   expected amount (e.g. doubling a loss weight doubles exactly that term;
   a new target radius moves only the heatmap losses);
4. paste the measured dict over the recorded one below and say why in the
   commit message.
"""
import contextlib
import math

import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import fuller  # noqa: F401  (registers fuller's modules)
from fuller.testing import (REPO_ROOT, build_model_from_config,
                            make_multitask_data, model_sample_kwargs,
                            one_thread)
from fuller.testing.models import load_model_cfg
from fuller.utils.config_utils import load_config
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes

FULLER_TINY = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny_1xb2-24e_synthetic-nus.py'
SUM_TINY = REPO_ROOT / 'configs' / 'bevfusion' / 'bevfusion_tiny_1xb2-24e_synthetic-nus.py'
CENTERHEAD = (REPO_ROOT / 'configs' / 'fuller' /
              'fuller_tiny-centerhead_1xb2-24e_synthetic-nus.py')
LOSS_REL = 1e-4         # each loss term
GRAD_REL = 2e-3         # gradient norm of each part of the model
CALIB_REL = 1e-3        # FULLER's calibration statistics
AFTER_STEP_REL = 5e-2   # total loss after the AdamW step

# x, y, z, l, w, h, yaw, vx, vy (LiDAR frame, bottom centre): a car and a
# bus, as in test_head_targets_by_hand.py
CAR = [10.3, -8.9, -1.9, 4.5, 1.9, 1.6, 0.4, 3.0, -1.0]
BUS = [-15.5, 7.3, -2.0, 11.4, 2.9, 3.4, -1.3, 0.0, 2.0]

# ------------------------------------------------------- recorded values
GOLDEN_DET_HEAD = {
    'loss_bbox': 3.935199737548828,
    'loss_cls': 0.9284058213233948,
    'loss_heatmap': 88.66814422607422,
}
GOLDEN_SEG_HEAD = {
    'loss_carpark_area': 0.27563461661338806,
    'loss_divider': 0.2344430685043335,
    'loss_drivable_area': 0.1605345606803894,
    'loss_ped_crossing': 0.32740136981010437,
    'loss_stop_line': 0.2371746152639389,
    'loss_walkway': 0.1396370828151703,
}
GOLDEN_CENTER_HEAD = {
    'task0.loss_bbox': 1.6406563520431519,
    'task0.loss_heatmap': 3591.539794921875,
    'task1.loss_bbox': 0.0,
    'task1.loss_heatmap': 6160.5625,
    'task2.loss_bbox': 1.9031872749328613,
    'task2.loss_heatmap': 3792.063232421875,
    'task3.loss_bbox': 0.0,
    'task3.loss_heatmap': 7102.4169921875,
    'task4.loss_bbox': 0.0,
    'task4.loss_heatmap': 4875.96044921875,
    'task5.loss_bbox': 0.0,
    'task5.loss_heatmap': 2989.0576171875,
}
GOLDEN_FULLER_STEP = {
    'calib:calib/alpha/det': 0.0012047257792198677,
    'calib:calib/alpha/seg': 0.9987952742207802,
    'calib:calib/cos/det-seg': 0.009389698448779418,
    'calib:calib/excluded/det': 0.0,
    'calib:calib/excluded/seg': 0.0,
    'calib:calib/modality_ratio/after': 0.9999999999999998,
    'calib:calib/modality_ratio/before': 0.6980394904860141,
    'calib:calib/norm/modality/camera': 0.006624279192218139,
    'calib:calib/norm/modality/lidar': 0.009489834432728076,
    'calib:calib/norm/modality_calibrated/camera': 0.008057056812473108,
    'calib:calib/norm/modality_calibrated/lidar': 0.00805705681247311,
    'calib:calib/norm/task/combined': 0.003592042322043021,
    'calib:calib/norm/task/det': 2.0984992068627553,
    'calib:calib/norm/task/seg': 0.002531165452452047,
    'calib:calib/proj_rel/det': 0.0012160240187303795,
    'calib:calib/proj_rel/seg': 0.11476518193424427,
    'calib:calib/scale/camera': 1.2162918528461364,
    'calib:calib/scale/lidar': 0.8490197452430072,
    'calib:calib/share/det': 0.5,
    'calib:calib/share/seg': 0.5000000000000001,
    'calib:calib/share_plain/det': 0.9999872197844676,
    'calib:calib/share_plain/seg': 1.2780215532429779e-05,
    'grad:decoder': 0.41621811226517086,
    'grad:fuser': 0.2757127143527138,
    'grad:heads.det': 1807.2221065087501,
    'grad:heads.seg': 1.533268557438189,
    'grad:img_backbone': 0.032006321060940285,
    'grad:img_neck': 0.004419613966545389,
    'grad:pts_middle_encoder': 1.8143471254650017,
    'grad:view_transform': 0.007637848328281083,
    'loss:det/loss_bbox': 1.9442118406295776,
    'loss:det/loss_cls': 0.7552844285964966,
    'loss:det/loss_heatmap': 133.50802612304688,
    'loss:seg/loss_carpark_area': 0.1695261001586914,
    'loss:seg/loss_divider': 0.280003160238266,
    'loss:seg/loss_drivable_area': 0.24958398938179016,
    'loss:seg/loss_ped_crossing': 0.1002560704946518,
    'loss:seg/loss_stop_line': 0.1315615028142929,
    'loss:seg/loss_walkway': 0.16268153488636017,
    'step:loss_after': 55.58256912231445,
}
GOLDEN_SUM_STEP = {
    'grad:decoder': 292.4337445473685,
    'grad:fuser': 204.4169337303085,
    'grad:heads.det': 1807.2221065087501,
    'grad:heads.seg': 1.533268557438189,
    'grad:img_backbone': 18.27320105441302,
    'grad:img_neck': 2.559065579616434,
    'grad:pts_middle_encoder': 1772.3032590270918,
    'grad:view_transform': 4.323278303775964,
    'loss:det/loss_bbox': 1.9442118406295776,
    'loss:det/loss_cls': 0.7552844285964966,
    'loss:det/loss_heatmap': 133.50802612304688,
    'loss:seg/loss_carpark_area': 0.1695261001586914,
    'loss:seg/loss_divider': 0.280003160238266,
    'loss:seg/loss_drivable_area': 0.24958398938179016,
    'loss:seg/loss_ped_crossing': 0.1002560704946518,
    'loss:seg/loss_stop_line': 0.1315615028142929,
    'loss:seg/loss_walkway': 0.16268153488636017,
    'step:loss_after': 56.082942962646484,
}


def check(measured: dict, golden: dict, rel: dict) -> None:
    """Each key of ``golden`` within ``rel[kind]`` of the measured value;
    the message lists every key and the measured dict to paste."""
    assert golden is not None, f'no golden values recorded; measured:\n{measured!r}'
    bad = []
    for key, want in golden.items():
        got = measured.get(key)
        tol = rel[key.split(':')[0]] if ':' in key else rel['']
        if got is None or not math.isclose(got, want, rel_tol=tol, abs_tol=1e-9):
            bad.append(f'  {key}: recorded {want!r}, measured {got!r}')
    extra = sorted(set(measured) - set(golden))
    assert not bad and not extra, (
        'golden values differ (see the module docstring to update them on '
        'purpose):\n' + '\n'.join(bad) + f'\n  keys not recorded: {extra}'
        f'\nmeasured:\n{measured!r}')


def det_sample(boxes, labels) -> Det3DDataSample:
    sample = Det3DDataSample()
    sample.gt_instances_3d = InstanceData(
        bboxes_3d=LiDARInstance3DBoxes(torch.tensor(boxes).reshape(-1, 9),
                                       box_dim=9),
        labels_3d=torch.tensor(labels, dtype=torch.long))
    return sample


def seeded_map(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def head_losses(head, feats, samples) -> dict:
    torch.manual_seed(0)  # dropout of the query decoder
    losses = head.loss(feats, samples)
    return {k: v.item() for k, v in losses.items()}


@contextlib.contextmanager
def seeded_head(config, key: str, **overrides):
    """The head ``key`` of ``config``'s model with ``overrides`` set,
    built and initialised under seed 0, inside one thread."""
    init_default_scope('mmdet3d')
    cfg = load_model_cfg(config)[key]
    cfg.update(overrides)
    with one_thread():
        torch.manual_seed(0)
        head = MODELS.build(cfg)
        head.init_weights()
        yield head


def measure_det_head() -> dict:
    grid = dict(x_range=(-27.0, 27.0), y_range=(-18.0, 18.0), cell_size=0.6)
    with seeded_head(FULLER_TINY, 'det_head', input_grid=grid) as head:
        feats = seeded_map((2, head.in_channels, 60, 90), seed=1)
        return head_losses(head, feats, [
            det_sample([CAR, BUS], [0, 3]), det_sample([BUS], [3])])


def measure_seg_head() -> dict:
    with seeded_head(FULLER_TINY, 'seg_head') as head:
        ny, nx = head.input_grid.shape
        feats = seeded_map((2, head.in_channels, ny, nx), seed=2)
        samples = []
        my, mx = head.map_grid.shape
        for shift in (0, 30):
            sample = Det3DDataSample()
            masks = torch.zeros(6, my, mx, dtype=torch.bool)
            masks[0, 80 + shift:120 + shift] = True     # a road band along x
            masks[2, :, 40:60] = True                   # a walkway along y
            masks[5, 99 + shift] = True                 # a divider line
            sample.gt_masks_bev = masks
            samples.append(sample)
        return head_losses(head, feats, samples)


def measure_center_head() -> dict:
    with seeded_head(CENTERHEAD, 'det_head') as head:
        feats = seeded_map((2, head.in_channels, 90, 90), seed=3)
        return head_losses(head, [feats], [
            det_sample([CAR, BUS], [0, 3]), det_sample([BUS], [3])])


def test_transfusion_head_losses():
    check(measure_det_head(), GOLDEN_DET_HEAD, {'': LOSS_REL})


def test_map_head_losses():
    check(measure_seg_head(), GOLDEN_SEG_HEAD, {'': LOSS_REL})


def test_center_head_losses_through_config():
    check(measure_center_head(), GOLDEN_CENTER_HEAD, {'': LOSS_REL})


PARTS = ('img_backbone', 'img_neck', 'view_transform', 'pts_middle_encoder',
         'fuser', 'decoder', 'heads.det', 'heads.seg')


def training_step(config) -> dict:
    """One step as ``model.train_step`` takes it (preprocess, loss,
    parse_losses, backward, the config's optimiser wrapper: AdamW with
    clipping), recording each loss term, the gradient norm of each part,
    the calibration statistics and the total loss after the step."""
    init_default_scope('mmdet3d')
    with one_thread():
        model = build_model_from_config(config, seed=0)
        model.train()
        if model.grad_calibrator is not None:
            model.grad_calibrator.record_stats = True
        optim = build_optim_wrapper(model, load_config(str(config)).optim_wrapper)
        raw = make_multitask_data((0, 1), **model_sample_kwargs(model, num_cams=2))
        data = model.data_preprocessor(raw, True)
        torch.manual_seed(0)
        losses = model(**data, mode='loss')
        total, _ = model.parse_losses(losses)
        optim.backward(total)
        measured = {f'loss:{k}': v.item() for k, v in losses.items()}
        for part in PARTS:
            grads = [p.grad.double().norm() ** 2 for n, p in model.named_parameters()
                     if n.startswith(part + '.') and p.grad is not None]
            measured[f'grad:{part}'] = float(sum(grads)) ** 0.5
        if model.grad_calibrator is not None:
            measured.update({f'calib:{k}': float(v) for k, v in
                             model.grad_calibrator.scalar_stats().items()})
        optim.step()
        optim.zero_grad()
        torch.manual_seed(0)
        after, _ = model.parse_losses(model(**data, mode='loss'))
        measured['step:loss_after'] = after.item()
    return measured


STEP_TOL = dict(loss=LOSS_REL, grad=GRAD_REL, calib=CALIB_REL, step=AFTER_STEP_REL)


def test_fuller_training_step():
    check(training_step(FULLER_TINY), GOLDEN_FULLER_STEP, STEP_TOL)


def test_plain_sum_training_step():
    check(training_step(SUM_TINY), GOLDEN_SUM_STEP, STEP_TOL)

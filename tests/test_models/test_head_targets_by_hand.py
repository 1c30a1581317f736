"""Head targets and losses of a two-object scene, derived by hand.

Nothing expected here comes from the code under test: heatmap peaks,
Gaussian values, regression codes, assignments and loss values are computed
below from the geometry written down in this docstring and the published
loss formulas, with plain Python/torch arithmetic.

Detection head: the TransFusion-style head of the tiny FULLER config
(configs/fuller/fuller_tiny_1xb2-24e_synthetic-nus.py: its losses, code
weights, Gaussian settings and assigner), on a non-square grid so that an
axis swap breaks the test::

    x in [-27, 27] m, y in [-18, 18] m, 0.6 m cells -> (Y, X) = (60, 90)
    grid coordinates gx = (x + 27) / 0.6, gy = (y + 18) / 0.6 (cells)

Two objects (LiDAR frame, bottom-centre boxes x, y, z, l, w, h, yaw, vx, vy):

    car (label 0): 10.3, -8.9, -1.9, 4.5, 1.9, 1.6, 0.4, 3.0, -1.0
        gx = 37.3 / 0.6 = 62.1667, gy = 9.1 / 0.6 = 15.1667 -> cell (15, 62)
        size in cells 7.5 x 3.1667 -> CornerNet radius 2.05 -> 2
    bus (label 3): -15.5, 7.3, -2.0, 11.4, 2.9, 3.4, -1.3, 0.0, 2.0
        gx = 11.5 / 0.6 = 19.1667, gy = 25.3 / 0.6 = 42.1667 -> cell (42, 19)
        size in cells 19 x 4.8333 -> CornerNet radius 3.84 -> 3

Heatmap target of class c: exp(-(dx^2 + dy^2) / (2 sigma^2)) on the
(2r+1)^2 window around the object's cell, sigma = (2r + 1) / 6, 0 elsewhere.
Box code: [gx, gy, z + h / 2, log l, log w, log h, sin yaw, cos yaw, vx, vy].

CenterHead (mmdet3d's, through configs/fuller/fuller_tiny-centerhead_*.py):
its grid is the tiny model's, [-54, 54] m in x and y at 1.2 m, 90 x 90.
"""
import math

import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import fuller  # noqa: F401  (registers fuller's modules)
from fuller.testing import REPO_ROOT
from fuller.testing.models import load_model_cfg
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes

TINY = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny_1xb2-24e_synthetic-nus.py'
CENTERHEAD = (REPO_ROOT / 'configs' / 'fuller' /
              'fuller_tiny-centerhead_1xb2-24e_synthetic-nus.py')

X_MIN, Y_MIN, CELL, NX, NY = -27.0, -18.0, 0.6, 90, 60
CAR = [10.3, -8.9, -1.9, 4.5, 1.9, 1.6, 0.4, 3.0, -1.0]
BUS = [-15.5, 7.3, -2.0, 11.4, 2.9, 3.4, -1.3, 0.0, 2.0]
BOXES = torch.tensor([CAR, BUS])
LABELS = torch.tensor([0, 3])
# (class, iy, ix) of each object's cell and its Gaussian radius, as derived
# in the module docstring.
PEAKS = [(0, 15, 62, 2), (3, 42, 19, 3)]


def cornernet_radius(length: float, width: float, overlap: float) -> float:
    """CornerNet's Gaussian radius (Law & Deng, ECCV 2018, three cases), in
    the units of length and width, written out once more for the test."""
    s, a = length + width, length * width
    r1 = (s + math.sqrt(s * s - 4 * a * (1 - overlap) / (1 + overlap))) / 2
    r2 = (2 * s + math.sqrt(4 * s * s - 16 * (1 - overlap) * a)) / 2
    r3 = (-2 * overlap * s + math.sqrt((2 * overlap * s)**2 -
                                       16 * overlap * (overlap - 1) * a)) / 2
    return min(r1, r2, r3)


def hand_code(box) -> list:
    x, y, z, length, width, height, yaw, vx, vy = box
    return [(x - X_MIN) / CELL, (y - Y_MIN) / CELL, z + height / 2,
            math.log(length), math.log(width), math.log(height),
            math.sin(yaw), math.cos(yaw), vx, vy]


def hand_heatmap(num_classes: int) -> torch.Tensor:
    """(NC, Y, X) targets of the two objects, one cell at a time."""
    heat = torch.zeros(num_classes, NY, NX, dtype=torch.float64)
    for label, iy, ix, r in PEAKS:
        sigma = (2 * r + 1) / 6
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                value = math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
                heat[label, iy + dy, ix + dx] = max(
                    heat[label, iy + dy, ix + dx].item(), value)
    return heat


@pytest.fixture(scope='module')
def head():
    """The tiny config's detection head on the non-square test grid."""
    init_default_scope('mmdet3d')
    cfg = load_model_cfg(TINY).det_head
    cfg.input_grid = dict(x_range=(X_MIN, -X_MIN), y_range=(Y_MIN, -Y_MIN),
                          cell_size=CELL)
    torch.manual_seed(0)
    return MODELS.build(cfg)


def gt_sample() -> Det3DDataSample:
    sample = Det3DDataSample()
    sample.gt_instances_3d = InstanceData(
        bboxes_3d=LiDARInstance3DBoxes(BOXES, box_dim=9), labels_3d=LABELS)
    return sample


def test_scene_geometry_written_down():
    """The docstring's numbers, from the boxes."""
    assert [math.floor(c) for c in hand_code(CAR)[:2]] == [62, 15]
    assert [math.floor(c) for c in hand_code(BUS)[:2]] == [19, 42]
    assert cornernet_radius(4.5 / CELL, 1.9 / CELL, 0.1) == \
        pytest.approx(2.05, abs=0.01)
    assert cornernet_radius(11.4 / CELL, 2.9 / CELL, 0.1) == \
        pytest.approx(3.84, abs=0.01)


def test_heatmap_targets_peaks_and_gaussians(head):
    """The head's own heatmap targets (captured on the way into its heatmap
    loss) equal the Gaussians written by hand; settings from the config."""
    assert (head.gaussian_overlap, head.min_radius) == (0.1, 2)
    assert head.input_grid.shape == (NY, NX)
    captured = {}
    loss_heatmap = head.loss_heatmap.forward

    def spy(pred, target, *args, **kwargs):
        captured['target'] = target
        return loss_heatmap(pred, target, *args, **kwargs)

    head.loss_heatmap.forward = spy
    try:
        with torch.no_grad():
            head.loss(torch.zeros(1, head.in_channels, NY, NX), [gt_sample()])
    finally:
        del head.loss_heatmap.forward
    target = captured['target'][0]
    expected = hand_heatmap(head.num_classes)
    assert target.shape == (10, NY, NX)
    peaks = {tuple(i) for i in (target == 1).nonzero().tolist()}
    assert peaks == {(0, 15, 62), (3, 42, 19)}
    # a neighbour of each: car r = 2, sigma = 5/6; bus r = 3, sigma = 7/6
    assert target[0, 15, 63].item() == pytest.approx(math.exp(-0.72), rel=1e-5)
    assert target[3, 42, 22].item() == pytest.approx(math.exp(-9 * 18 / 49), rel=1e-5)
    assert target[0, 15, 65].item() == 0 and target[3, 42, 23].item() == 0
    torch.testing.assert_close(target.double(), expected, rtol=0, atol=1e-6)


def hand_queries(num_proposals: int, num_classes: int):
    """Codes (P, E) and class logits (P, NC) of hand-made queries: query 7
    near the car, query 23 near the bus, the rest 1 m boxes on a lattice in
    the far corner (gx 70..88, gy 46..58), logits -4 except the two."""
    codes = torch.zeros(num_proposals, 10, dtype=torch.float64)
    for k in range(num_proposals):
        codes[k, 0] = 70 + 2 * (k % 10)
        codes[k, 1] = 46 + 2 * (k // 10)
        codes[k, 7] = 1.0                      # yaw 0: sin 0, cos 1
    delta_car = [0.3, -0.2, 0.1, 0.05, -0.05, 0.02, 0.1, -0.1, 0.5, 0.25]
    delta_bus = [-0.4, 0.1, -0.2, 0.1, 0.05, -0.03, -0.05, 0.05, -0.3, 0.2]
    codes[7] = torch.tensor(hand_code(CAR)) + torch.tensor(delta_car)
    codes[23] = torch.tensor(hand_code(BUS)) + torch.tensor(delta_bus)
    logits = torch.full((num_proposals, num_classes), -4.0,
                        dtype=torch.float64)
    logits[7, 0] = 2.0
    logits[23, 3] = 1.0
    return codes.float(), logits.float(), delta_car, delta_bus


def as_layer(codes: torch.Tensor, logits: torch.Tensor) -> dict:
    """(P, E) codes -> one decoder layer's outputs (1, P, k), slices by the
    code layout of the module docstring."""
    return dict(center=codes[None, :, 0:2], height=codes[None, :, 2:3],
                dim=codes[None, :, 3:6], rot=codes[None, :, 6:8],
                vel=codes[None, :, 8:10], cls=logits[None])


def test_assigned_boxes_and_regression_targets(head):
    codes, logits, _, _ = hand_queries(head.num_proposals, head.num_classes)
    labels, code_targets, positive = head.get_targets_single(
        codes, logits, BOXES, LABELS)
    assert positive.nonzero().flatten().tolist() == [7, 23]
    expected_labels = [head.num_classes] * head.num_proposals
    expected_labels[7], expected_labels[23] = 0, 3
    assert labels.tolist() == expected_labels
    torch.testing.assert_close(code_targets[7], torch.tensor(hand_code(CAR)))
    torch.testing.assert_close(code_targets[23], torch.tensor(hand_code(BUS)))
    assert (code_targets[~positive] == 0).all()
    # literal values of the car's code, from the docstring
    torch.testing.assert_close(
        code_targets[7, :3], torch.tensor([62.16667, 15.16667, -1.1]))


def test_losses_by_hand(head):
    """Every loss of the head on hand-made predictions, from the formulas:
    Gaussian focal (CornerNet: alpha 2, beta 4) on the heatmap over the
    number of peaks; sigmoid focal (gamma 2, alpha 0.25) on the query
    classes and code-weighted L1 x 0.25 on the codes, both over the number
    of matched queries (2)."""
    codes, logits, delta_car, delta_bus = hand_queries(head.num_proposals,
                                                       head.num_classes)
    dense_logit = -1.5
    preds = dict(dense_heatmap=torch.full((1, head.num_classes, NY, NX),
                                          dense_logit),
                 layers=[as_layer(codes, logits)])
    losses = head.loss_by_feat(preds, [gt_sample().gt_instances_3d])
    assert set(losses) == {'loss_heatmap', 'loss_cls', 'loss_bbox'}

    p = 1 / (1 + math.exp(-dense_logit))
    heat = hand_heatmap(head.num_classes)
    pos = (heat == 1).sum().item() * -math.log(p) * (1 - p)**2
    neg = ((1 - heat)**4).sum().item() * -math.log(1 - p) * p**2
    assert losses['loss_heatmap'].item() == pytest.approx((pos + neg) / 2,
                                                          rel=1e-5)

    target = torch.zeros_like(logits, dtype=torch.float64)
    target[7, 0] = target[23, 3] = 1
    q = torch.sigmoid(logits.double())
    p_t = q * target + (1 - q) * (1 - target)
    alpha_t = 0.25 * target + 0.75 * (1 - target)
    focal = -alpha_t * (1 - p_t)**2 * torch.log(p_t)
    assert losses['loss_cls'].item() == pytest.approx(
        focal.sum().item() / 2, rel=1e-5)

    weights = [1.0] * 8 + [0.2, 0.2]
    l1 = sum(w * (abs(a) + abs(b))
             for w, a, b in zip(weights, delta_car, delta_bus))
    assert losses['loss_bbox'].item() == pytest.approx(0.25 * l1 / 2,
                                                       rel=1e-5)


# ------------------------------------------------------------ CenterHead
CH_MIN, CH_CELL, CH_N = -54.0, 1.2, 90
# car (label 0: group 0, channel 0), bus (label 3: group 2, channel 0)
CH_CAR = [10.3, -20.5, -1.9, 4.5, 1.9, 1.6, 0.4, 3.0, -1.0]
CH_BUS = [-30.2, 14.5, -2.0, 11.4, 2.9, 3.4, -1.3, 0.0, 2.0]
# gx = (x + 54) / 1.2, gy = (y + 54) / 1.2:
#   car 53.5833, 27.9167 -> cell (27, 53), offset (0.5833, 0.9167)
#   bus 19.8333, 57.0833 -> cell (57, 19), offset (0.8333, 0.0833)
# radii (cells 3.75 x 1.58 and 9.5 x 2.42: CornerNet 1.02 and 1.92) -> the
# config's min_radius 2 for both.


def test_center_head_targets_of_two_objects():
    init_default_scope('mmdet3d')
    torch.manual_seed(0)
    head = MODELS.build(load_model_cfg(CENTERHEAD).det_head)
    gt = InstanceData(
        bboxes_3d=LiDARInstance3DBoxes(torch.tensor([CH_CAR, CH_BUS]),
                                       box_dim=9),
        labels_3d=torch.tensor([0, 3]))
    heatmaps, anno_boxes, inds, masks = head.get_targets([gt])
    cells = {0: (27, 53, CH_CAR, (0.58333, 0.91667)),
             2: (57, 19, CH_BUS, (0.83333, 0.08333))}
    sigma2 = 2 * (5 / 6)**2                           # r = 2
    for group, heat in enumerate(heatmaps):
        heat = heat[0]
        if group not in cells:
            assert heat.max() == 0 and masks[group].sum() == 0, group
            continue
        iy, ix, box, offset = cells[group]
        assert (heat == 1).nonzero().tolist() == [[0, iy, ix]]
        assert heat[0, iy - 1, ix + 1].item() == pytest.approx(
            math.exp(-2 / sigma2), rel=1e-5)
        assert heat[0, iy + 2, ix].item() == pytest.approx(
            math.exp(-4 / sigma2), rel=1e-5)
        assert heat[0, iy + 3, ix].item() == 0
        assert masks[group][0].tolist()[:2] == [1, 0]
        assert inds[group][0, 0].item() == iy * CH_N + ix
        x, y, z, length, width, height, yaw, vx, vy = box
        expected = [offset[0], offset[1], z + height / 2, math.log(length),
                    math.log(width), math.log(height), math.sin(yaw),
                    math.cos(yaw), vx, vy]
        torch.testing.assert_close(anno_boxes[group][0, 0],
                                   torch.tensor(expected), atol=1e-4,
                                   rtol=0)

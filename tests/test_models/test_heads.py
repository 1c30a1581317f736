"""Task heads on a non-square BEV map: detection (TransFusionDetHead, and
mmdet3d's CenterHead as the config alternative) and map segmentation.

Grid of the tests (LiDAR frame): x in [-4.8, 4.8], y in [-3.2, 3.2] m,
voxel 0.2 m x out_size_factor 4 = 0.8 m cells -> (Y, X) = (8, 12).
"""
import math

import pytest
import torch
import torch.nn.functional as F
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
from mmengine.structures import InstanceData
from torch import nn

from fuller.models.heads import BEVMapSegHead, TransFusionDetHead
from fuller.models.task_modules import (CODE_SLICES, TransFusionDetCoder,
                                        axis_aligned_corners,
                                        center_heatmap_targets)
from fuller.structures.frames import BEVGrid

PCR = [-4.8, -3.2, -5.0, 4.8, 3.2, 3.0]
VOXEL = [0.2, 0.2, 8.0]
OSF = 4
GRID = BEVGrid((-4.8, 4.8), (-3.2, 3.2), 0.8)
C, NC = 8, 3
# x, y, z(bottom), l, w, h, yaw, vx, vy
GT_BOXES = torch.tensor([[1.0, -1.5, -1.0, 3.0, 1.6, 1.5, 0.3, 1.0, 0.5],
                         [-2.5, 2.0, -0.8, 0.8, 0.7, 1.7, -1.2, 0.0, 0.0],
                         [3.1, 1.1, -0.9, 2.0, 1.0, 1.2, 2.9, -0.5, 0.2]])
GT_LABELS = torch.tensor([0, 2, 0])


def det_head(**overrides) -> TransFusionDetHead:
    cfg = dict(type='TransFusionDetHead', in_channels=C, num_classes=NC,
               input_grid=GRID, num_proposals=10, hidden_channels=16, num_decoder_layers=2,
               num_heads=2, ffn_channels=32, head_conv=8, dropout=0.0)
    cfg.update(overrides)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def sample(boxes: torch.Tensor, labels: torch.Tensor) -> Det3DDataSample:
    data_sample = Det3DDataSample()
    data_sample.gt_instances_3d = InstanceData(
        bboxes_3d=LiDARInstance3DBoxes(boxes, box_dim=9), labels_3d=labels)
    return data_sample


def empty_sample() -> Det3DDataSample:
    return sample(torch.zeros(0, 9), torch.zeros(0, dtype=torch.long))


# ---------------------------------------------------------------- coder
def test_coder_round_trip_and_grid_units():
    coder = TransFusionDetCoder(GRID)
    codes = coder.encode(GT_BOXES)
    # x = 1.0 -> (1.0 + 4.8) / 0.8 cells; y = -1.5 -> (-1.5 + 3.2) / 0.8
    assert codes[0, 0].item() == pytest.approx(7.25)
    assert codes[0, 1].item() == pytest.approx(2.125)
    assert codes[0, 2].item() == pytest.approx(-1.0 + 0.75)  # gravity z
    assert torch.allclose(coder.decode(codes), GT_BOXES, atol=1e-5)
    nan_vel = GT_BOXES.clone()
    nan_vel[0, 7:] = float('nan')
    assert torch.isfinite(coder.encode(nan_vel)).all()
    corners = axis_aligned_corners(torch.tensor([[1.0, 2.0, -1.0, 4.0, 2.0,
                                                  1.5, 0.7]]))
    assert corners.tolist() == [[-1.0, 1.0, -1.0, 3.0, 3.0, 0.5]]


def test_heatmap_targets_peak_cells_non_square():
    heat = center_heatmap_targets(GT_BOXES, GT_LABELS, GRID, NC, 0.1, 2)
    assert heat.shape == (NC, 8, 12)
    # peak 1 exactly at (iy, ix) = floor((y - y_min) / 0.8), floor(...)
    peaks = {tuple(idx.tolist()) for idx in (heat == 1).nonzero()}
    assert peaks == {(0, 2, 7), (2, 6, 2), (0, 5, 9)}
    assert heat[1].max() == 0
    assert heat.max() == 1 and heat.min() == 0


def _center_head(with_targets_cfg=True):
    grid_size = [round((PCR[3] - PCR[0]) / VOXEL[0]),
                 round((PCR[4] - PCR[1]) / VOXEL[1]), 1]
    cfg = dict(
        type='CenterHead', in_channels=C,
        tasks=[dict(num_class=NC, class_names=['car', 'truck', 'ped'])],
        common_heads=dict(reg=(2, 2), height=(1, 2), dim=(3, 2),
                          rot=(2, 2), vel=(2, 2)),
        share_conv_channel=8,
        bbox_coder=dict(type='CenterPointBBoxCoder', pc_range=PCR[:2],
                        post_center_range=[-10, -10, -10, 10, 10, 10],
                        max_num=20, score_threshold=0.1,
                        out_size_factor=OSF, voxel_size=VOXEL[:2],
                        code_size=9),
        separate_head=dict(type='SeparateHead', init_bias=-2.19,
                           final_kernel=3),
        loss_cls=dict(type='mmdet.GaussianFocalLoss', reduction='mean'),
        loss_bbox=dict(type='mmdet.L1Loss', reduction='mean',
                       loss_weight=0.25),
        norm_bbox=True,
        train_cfg=dict(grid_size=grid_size, voxel_size=VOXEL,
                       out_size_factor=OSF, dense_reg=1,
                       gaussian_overlap=0.1, max_objs=50, min_radius=2,
                       code_weights=[1.0] * 8 + [0.2, 0.2],
                       point_cloud_range=PCR))
    return MODELS.build(cfg)


def test_heatmap_targets_equal_mmdet3d_center_head():
    center_head = _center_head()
    heatmaps = center_head.get_targets_single(
        InstanceData(bboxes_3d=LiDARInstance3DBoxes(GT_BOXES, box_dim=9),
                     labels_3d=GT_LABELS))[0]
    ours = center_heatmap_targets(GT_BOXES, GT_LABELS, GRID, NC, 0.1, 2)
    assert heatmaps[0].shape == ours.shape == (NC, 8, 12)
    assert torch.allclose(heatmaps[0], ours, atol=1e-6)


def test_center_head_loss_runs_on_non_square_map():
    torch.manual_seed(0)
    center_head = _center_head()
    feats = torch.randn(2, C, 8, 12, requires_grad=True)
    losses = center_head.loss([feats], [sample(GT_BOXES, GT_LABELS),
                                        sample(GT_BOXES[:1], GT_LABELS[:1])])
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert feats.grad.abs().sum() > 0


# ------------------------------------------------------------ det head
def test_det_head_forward_shapes():
    head = det_head()
    preds = head(torch.randn(2, C, 8, 12))
    assert preds['dense_heatmap'].shape == (2, NC, 8, 12)
    assert preds['query_labels'].shape == (2, 10)
    assert preds['query_scores'].shape == (2, 10, NC)
    assert len(preds['layers']) == 2
    sizes = {name: s.stop - s.start for name, s in CODE_SLICES.items()}
    sizes['cls'] = NC
    for layer in preds['layers']:
        assert {k: v.shape for k, v in layer.items()} == {
            k: (2, 10, n) for k, n in sizes.items()}


def test_det_head_rejects_grid_mismatch():
    head = det_head()
    with pytest.raises(ValueError, match=r'TransFusionDetHead.*\(8, 12\)'):
        head(torch.randn(1, C, 12, 8))           # X and Y swapped
    with pytest.raises(ValueError, match='TransFusionDetHead'):
        head(torch.randn(1, C + 1, 8, 12))


def test_det_head_query_positions_are_heatmap_peaks():
    head = det_head(num_proposals=2)
    heat = torch.full((1, NC, 8, 12), 0.01)
    heat[0, 2, 6, 2] = 0.9                         # class 2 at (iy, ix)
    heat[0, 0, 1, 10] = 0.8
    heat[0, 0, 1, 11] = 0.7                        # suppressed neighbour
    cells, labels, scores = head._select_queries(heat)
    assert cells.tolist() == [[6 * 12 + 2, 1 * 12 + 10]]
    assert labels.tolist() == [[2, 0]]
    assert scores[0, 0, 2].item() == pytest.approx(0.9)
    assert torch.allclose(head.cell_centers[cells[0]],
                          torch.tensor([[2.5, 6.5], [10.5, 1.5]]))


def test_det_head_centres_are_offsets_from_query_cells():
    head = det_head(num_proposals=4).eval()
    for pred_head in head.pred_heads:                # zero centre offset
        nn.init.zeros_(pred_head.center[-1].weight)
        nn.init.zeros_(pred_head.center[-1].bias)
    preds = head(torch.randn(2, C, 8, 12))
    cells, labels, _ = head._select_queries(
        preds['dense_heatmap'].sigmoid())
    assert torch.equal(labels, preds['query_labels'])
    iy, ix = cells // 12, cells % 12
    expected = torch.stack([ix + 0.5, iy + 0.5], dim=-1).float()
    for layer in preds['layers']:
        assert torch.allclose(layer['center'], expected)
    boxes = head.predict_by_feat(preds)[0].bboxes_3d.tensor
    # metric centre of cell (iy, ix): x_min + (ix + 0.5) * 0.8, likewise y
    metric = expected[0] * 0.8 + torch.tensor([-4.8, -3.2])
    assert all(any(torch.allclose(b[:2], m, atol=1e-5) for m in metric)
               for b in boxes)


def test_det_head_loss_finite_and_gradients_reach_everything():
    torch.manual_seed(0)
    head = det_head(loss_iou=dict(type='AxisAlignedIoULoss',
                                  loss_weight=1.0))
    feats = torch.randn(2, C, 8, 12, requires_grad=True)
    losses = head.loss(feats, [sample(GT_BOXES, GT_LABELS),
                               sample(GT_BOXES[1:], GT_LABELS[1:])])
    assert set(losses) == {'loss_heatmap', 'loss_cls', 'loss_bbox',
                           'loss_iou', 'd0.loss_cls', 'd0.loss_bbox',
                           'd0.loss_iou'}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert feats.grad.abs().sum() > 0
    no_grad = [n for n, p in head.named_parameters()
               if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_det_head_empty_gt():
    torch.manual_seed(0)
    head = det_head()
    feats = torch.randn(2, C, 8, 12, requires_grad=True)
    losses = head.loss(feats, [empty_sample(), empty_sample()])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_bbox'] == 0 and losses['loss_cls'] > 0
    sum(losses.values()).backward()
    assert torch.isfinite(feats.grad).all()
    mixed = head.loss(feats, [empty_sample(), sample(GT_BOXES, GT_LABELS)])
    assert all(torch.isfinite(v) for v in mixed.values())
    assert mixed['loss_bbox'] > 0


def test_perfect_queries_give_zero_box_loss_at_positives():
    head = det_head()
    codes = torch.randn(10, 10)
    codes[[4, 1, 7]] = head.coder.encode(GT_BOXES)   # queries 4, 1, 7 exact
    logits = torch.full((10, NC), -3.0)
    logits[[4, 1, 7], GT_LABELS] = 3.0
    labels, code_targets, positive = head.get_targets_single(
        codes, logits, GT_BOXES, GT_LABELS)
    assert positive.nonzero().flatten().tolist() == [1, 4, 7]
    assert labels.tolist() == [3, 2, 3, 3, 0, 3, 3, 0, 3, 3]
    assert torch.allclose(code_targets[positive], codes[positive])
    assert (code_targets[~positive] == 0).all()


def test_predict_fields_and_perfect_head_round_trip():
    head = det_head()
    preds = head(torch.randn(2, C, 8, 12))
    results = head.predict_by_feat(preds)
    assert len(results) == 2
    for res in results:
        assert isinstance(res.bboxes_3d, LiDARInstance3DBoxes)
        assert res.bboxes_3d.box_dim == 9
        assert res.scores_3d.shape == res.labels_3d.shape == (len(res), )
        assert (res.scores_3d[:-1] >= res.scores_3d[1:]).all()
    # a head whose outputs equal the encoded GT decodes back to the GT
    codes = head.coder.encode(GT_BOXES)[None]         # (1, G, E)
    layer = {name: codes[..., s] for name, s in CODE_SLICES.items()}
    layer['cls'] = torch.full((1, 3, NC), -6.0)
    layer['cls'][0, [0, 1, 2], GT_LABELS] = torch.tensor([6.0, 5.0, 4.0])
    perfect = dict(layers=[layer], query_labels=GT_LABELS[None],
                   query_scores=torch.ones(1, 3, NC))
    res = head.predict_by_feat(perfect)[0]
    assert torch.allclose(res.bboxes_3d.tensor, GT_BOXES, atol=1e-5)
    assert torch.allclose(res.bboxes_3d.bottom_center,
                          GT_BOXES[:, :3], atol=1e-5)
    assert res.labels_3d.tolist() == GT_LABELS.tolist()
    assert torch.allclose(res.scores_3d,
                          torch.sigmoid(torch.tensor([6.0, 5.0, 4.0])))


def test_det_head_optimisation_lowers_loss():
    torch.manual_seed(0)
    head = det_head(num_decoder_layers=1)
    feats = torch.randn(2, C, 8, 12)
    batch = [sample(GT_BOXES, GT_LABELS), sample(GT_BOXES[1:], GT_LABELS[1:])]
    optim = torch.optim.Adam(head.parameters(), lr=5e-3)
    history = []
    for _ in range(10):
        losses = head.loss(feats, batch)
        optim.zero_grad()
        sum(losses.values()).backward()
        optim.step()
        history.append({k: v.item() for k, v in losses.items()})
    for key in ('loss_heatmap', 'loss_cls', 'loss_bbox'):
        assert history[-1][key] < 0.9 * history[0][key], key
    assert sum(history[-1].values()) < 0.5 * sum(history[0].values())


def test_light_det_head_is_smaller():
    def count(module):
        return sum(p.numel() for p in module.parameters())
    heavy = det_head(hidden_channels=128, num_heads=8, ffn_channels=256,
                     head_conv=64, num_decoder_layers=1)
    light = det_head(hidden_channels=64, num_heads=4, ffn_channels=128,
                     head_conv=32, num_decoder_layers=1)
    assert count(light) < 0.4 * count(heavy)


# ------------------------------------------------------------ seg head
IN_GRID = dict(x_range=(-6.0, 6.0), y_range=(-3.6, 3.6), cell_size=0.6)
MAP_GRID = dict(x_range=(-5.0, 5.0), y_range=(-2.5, 2.5), cell_size=0.5)


def seg_head(**overrides) -> BEVMapSegHead:
    cfg = dict(type='BEVMapSegHead', in_channels=4, input_grid=IN_GRID,
               map_grid=MAP_GRID, channels=8)
    cfg.update(overrides)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def coordinate_feature(grid: BEVGrid) -> torch.Tensor:
    """(1, 2, Y, X): channel 0 = metric x, channel 1 = metric y of each
    cell centre."""
    ys, xs = grid.cell_centers()
    yy, xx = torch.meshgrid(torch.as_tensor(ys), torch.as_tensor(xs),
                            indexing='ij')
    return torch.stack([xx, yy])[None].float()


def test_seg_resampling_is_metric_not_resize():
    head = seg_head(in_channels=2)
    feats = coordinate_feature(head.input_grid)        # (1, 2, 12, 20)
    assert feats.shape == (1, 2, 12, 20)
    out = head.resample(feats)
    expected = coordinate_feature(head.map_grid)       # (1, 2, 10, 20)
    assert out.shape == expected.shape == (1, 2, 10, 20)
    assert torch.allclose(out, expected, atol=1e-4)
    naive = F.interpolate(feats, size=(10, 20), mode='bilinear',
                          align_corners=False)
    assert not torch.allclose(naive, expected, atol=1e-2)


def test_seg_resampling_outside_input_is_zero():
    with pytest.warns(UserWarning, match='reaches beyond'):
        head = seg_head(in_channels=2, map_grid=dict(
            x_range=(-8.0, 8.0), y_range=(-2.5, 2.5), cell_size=0.5))
    out = head.resample(coordinate_feature(head.input_grid) + 100.0)
    xs = torch.as_tensor(head.map_grid.cell_centers()[1])
    outside = xs.abs() > 6.0 + 0.3                     # beyond half a cell
    inside = xs.abs() < 6.0 - 0.3                      # within cell centres
    assert (out[0, :, :, outside] == 0).all()
    assert torch.allclose(out[0, 0, :, inside], 100.0 + xs[inside].float(),
                          atol=1e-4)


def test_seg_head_loss_keys_finite_and_gradients():
    torch.manual_seed(0)
    head = seg_head()
    feats = torch.randn(2, 4, 12, 20, requires_grad=True)
    batch = []
    for _ in range(2):
        data_sample = Det3DDataSample()
        data_sample.gt_masks_bev = torch.rand(6, 10, 20) > 0.7
        batch.append(data_sample)
    losses = head.loss(feats, batch)
    assert list(losses) == ['loss_drivable_area', 'loss_ped_crossing',
                            'loss_walkway', 'loss_stop_line',
                            'loss_carpark_area', 'loss_divider']
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert feats.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in head.parameters())
    probs = head.predict(feats.detach(), batch)
    assert len(probs) == 2 and probs[0].shape == (6, 10, 20)
    assert ((probs[0] >= 0) & (probs[0] <= 1)).all()


def test_seg_head_optimisation_lowers_loss():
    torch.manual_seed(0)
    head = seg_head()
    feats = torch.randn(2, 4, 12, 20)
    # learnable targets: the sign of an input channel at the map cell
    masks = head.resample(feats)[:, [0, 1, 2, 3, 0, 1]] > 0
    batch = []
    for mask in masks:
        data_sample = Det3DDataSample()
        data_sample.gt_masks_bev = mask
        batch.append(data_sample)
    optim = torch.optim.Adam(head.parameters(), lr=3e-2)
    history = []
    for _ in range(12):
        loss = sum(head.loss(feats, batch).values())
        optim.zero_grad()
        loss.backward()
        optim.step()
        history.append(loss.item())
    assert history[-1] < 0.6 * history[0]


def test_seg_losses_hand_values():
    logits = torch.zeros(1, 6, 10, 20)
    targets = torch.ones(1, 6, 10, 20)
    # p = 0.5, BCE = ln 2, focal (gamma 2) multiplies by (1 - 0.5)^2
    focal = seg_head().loss_by_feat(logits, targets)
    bce = seg_head(loss_type='bce').loss_by_feat(logits, targets)
    alpha = seg_head(focal_alpha=0.25).loss_by_feat(logits, targets)
    assert focal['loss_walkway'].item() == pytest.approx(math.log(2) / 4)
    assert bce['loss_walkway'].item() == pytest.approx(math.log(2))
    assert alpha['loss_walkway'].item() == pytest.approx(
        0.25 * math.log(2) / 4)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 10, 20, generator=gen)
    targets = (torch.rand(2, 6, 10, 20, generator=gen) > 0.5).float()
    bce = seg_head(loss_type='bce').loss_by_feat(logits, targets)
    gamma0 = seg_head(focal_gamma=0.0).loss_by_feat(logits, targets)
    reference = F.binary_cross_entropy_with_logits(
        logits[:, 3], targets[:, 3])
    assert bce['loss_stop_line'].item() == pytest.approx(reference.item())
    assert gamma0['loss_stop_line'].item() == pytest.approx(
        reference.item())
    with pytest.raises(ValueError, match='loss_type'):
        seg_head(loss_type='dice')


def test_seg_head_rejects_bad_shapes():
    head = seg_head()
    with pytest.raises(ValueError, match=r'BEVMapSegHead.*\(12, 20\)'):
        head(torch.randn(1, 4, 20, 12))
    data_sample = Det3DDataSample()
    data_sample.gt_masks_bev = torch.zeros(6, 20, 10, dtype=torch.bool)
    with pytest.raises(ValueError, match='gt_masks_bev'):
        head.loss(torch.randn(1, 4, 12, 20), [data_sample])


def test_seg_head_grid_from_dict_and_light_variant():
    with pytest.warns(UserWarning, match='reaches beyond'):  # map x to 5 m, input to 4.8 m
        head = seg_head(in_channels=16, input_grid=dict(
            x_range=(-4.8, 4.8), y_range=(-3.2, 3.2), cell_size=(0.8, 0.8)))
    assert head.input_grid == GRID
    with pytest.raises(TypeError, match='check_config_consistency'):  # a reference string
        seg_head(in_channels=16, input_grid='${geometry.bev_grid}')
    heavy = seg_head(in_channels=16, channels=None, num_convs=2)
    light = seg_head(in_channels=16, channels=4, num_convs=1)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(light) < count(heavy) / 4

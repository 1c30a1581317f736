"""The CenterHead example config groups the dataset's classes in order.

mmdet3d's ``CenterHead.get_targets`` maps label ``i`` to the ``i``-th class
name of its task groups read one after the other, so the groups must list the
dataset's ``class_names`` in the dataset's order. Targets are built with
mmdet3d's own ``get_targets`` from the head of the real config; the expected
(group, index in group) of every class is written by hand below.

BEV target grid of the config: range [-54, 54) m in x and y, 0.3 m voxels,
stride 4 -> 1.2 m cells, 90 x 90; heat maps are (classes of the group, Y, X).
"""
import copy

import pytest
import torch
from fuller.utils.config_utils import load_config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import fuller  # noqa: F401
from mmdet3d.registry import MODELS
from mmdet3d.structures import LiDARInstance3DBoxes
from fuller.testing import REPO_ROOT

CONFIG = (REPO_ROOT / 'configs' / 'fuller' /
          'fuller_tiny-centerhead_1xb2-24e_synthetic-nus.py')
# The dataset's class order (configs/_base_/datasets/nus_synthetic.py and
# mmdet3d's NuScenesDataset.METAINFO), written out by hand.
CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle',
           'bicycle', 'motorcycle', 'pedestrian', 'traffic_cone', 'barrier')
# class -> (task group, channel within the group's heat map)
EXPECTED = {
    'car': (0, 0),
    'truck': (1, 0),
    'trailer': (1, 1),
    'bus': (2, 0),
    'construction_vehicle': (2, 1),
    'bicycle': (3, 0),
    'motorcycle': (3, 1),
    'pedestrian': (4, 0),
    'traffic_cone': (4, 1),
    'barrier': (5, 0),
}
CELL = 1.2  # m: 0.3 m voxel x stride 4
GRID_MIN = -54.0
CELLS = 90


@pytest.fixture(scope='module')
def cfg():
    init_default_scope('mmdet3d')
    return load_config(str(CONFIG))


@pytest.fixture(scope='module')
def head(cfg):
    torch.manual_seed(0)
    return MODELS.build(copy.deepcopy(cfg.model.det_head))


def box_cell(label):
    """(row y, column x) of the target cell of the box with ``label``;
    every label gets its own cell."""
    return 20 + 5 * label, 10 + 7 * label


def make_gt():
    """One box per class, centred in its own cell, with its own size."""
    rows = []
    for label in range(len(CLASSES)):
        iy, ix = box_cell(label)
        x = GRID_MIN + (ix + 0.5) * CELL
        y = GRID_MIN + (iy + 0.5) * CELL
        length, width, height = 1.0 + 0.25 * label, 0.8 + 0.1 * label, 1.5
        # bottom centre z = -1.75, yaw 0.3, velocity (0.5, -0.25)
        rows.append([x, y, -1.75, length, width, height, 0.3, 0.5, -0.25])
    boxes = LiDARInstance3DBoxes(torch.tensor(rows), box_dim=9)
    return InstanceData(bboxes_3d=boxes,
                        labels_3d=torch.arange(len(CLASSES)))


def test_groups_list_the_dataset_classes_in_order(cfg, head):
    assert tuple(cfg.class_names) == CLASSES
    assert tuple(cfg.train_dataloader.dataset.metainfo.classes) == CLASSES
    flat = [name for group in head.class_names for name in group]
    assert tuple(flat) == CLASSES
    for name, (group, index) in EXPECTED.items():
        assert head.class_names[group][index] == name
    # one circle-NMS radius per group
    assert len(cfg.model.det_head.test_cfg.min_radius) == len(
        head.class_names)


def test_get_targets_puts_each_box_in_its_group_and_channel(head):
    gt = make_gt()
    heatmaps, anno_boxes, inds, masks = head.get_targets([gt])
    assert len(heatmaps) == 6
    peaks = {}  # (group, channel, row, col) of every heat-map value 1
    for group, hm in enumerate(heatmaps):
        assert hm.shape[2:] == (CELLS, CELLS)
        for _, ch, iy, ix in torch.nonzero(hm == 1).tolist():
            peaks[(group, ch, iy, ix)] = True
    expected_peaks = {(*EXPECTED[name], *box_cell(label)): True
                      for label, name in enumerate(CLASSES)}
    assert peaks == expected_peaks
    for label, name in enumerate(CLASSES):
        group, channel = EXPECTED[name]
        iy, ix = box_cell(label)
        assert heatmaps[group].shape[1] == sum(
            1 for g in EXPECTED.values() if g[0] == group)
        # the box's regression target sits at slot `channel` of its group
        # (boxes are taken class by class) and points at its cell
        assert masks[group][0, channel] == 1
        assert inds[group][0, channel] == iy * CELLS + ix
        target = anno_boxes[group][0, channel]
        length, width = 1.0 + 0.25 * label, 0.8 + 0.1 * label
        # norm_bbox: log of (l, w, h); z is the gravity centre
        torch.testing.assert_close(
            target[3:6], torch.log(torch.tensor([length, width, 1.5])))
        torch.testing.assert_close(target[2], torch.tensor(-1.0))
        # offset of the centre inside its cell: half a cell
        torch.testing.assert_close(target[:2], torch.tensor([0.5, 0.5]))
    for group, mask in enumerate(masks):
        count = sum(1 for g in EXPECTED.values() if g[0] == group)
        assert int(mask.sum()) == count

"""The full-size model config (BEVFusion's published size:
``configs/_base_/models/bevfusion_multitask.py``) builds and runs on CPU.

Input: one real nuScenes keyframe (Sample A of ``../shared/nuscenes-real``:
six 1600x900 cameras -> 256x704 through the dataset config's test pipeline,
the 34,688-point LIDAR_TOP scan, 32,330 inside the range, and its GT boxes).
The real data has no map expansion, so the map mask is a hand-made road.

Expectations (independent of the model code):
- grids from the config's numbers: 108 m / (0.075 m x 8) = 180 cells for the
  LiDAR and shared BEV, 108 m / (0.3 m x 2) = 180 for the camera BEV; the map
  grid 100 m / 0.5 m = 200.
- the LiDAR BEV is sparse-conv output, exactly zero where no voxel is
  active: it must be non-zero only within one 0.6 m cell of a cell that
  holds a point, and every such cell must have a non-zero cell within one
  cell. A real scan is not symmetric in x and y, so an axis swap fails this.

About 22 s and 2.5 GB on 2 idle CPU cores (not marked slow; ~65 s when
other jobs oversubscribe the cores).
"""
import copy

import numpy as np
import pytest
import torch
from fuller.utils.config_utils import load_config
from mmengine.dataset import pseudo_collate

import fuller  # noqa: F401
from fuller.testing import build_model_from_config
from mmdet3d.registry import DATASETS
from mmdet3d.structures import LiDARInstance3DBoxes
from fuller.testing import REPO_ROOT, SHARED_REAL

FULL = REPO_ROOT / 'configs' / '_base_' / 'models' / 'bevfusion_multitask.py'
# the full-size model and nuScenes data together (the dataset base reads the model's geometry)
DATASET = REPO_ROOT / 'configs' / 'bevfusion' / \
    'bevfusion_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py'
REAL = SHARED_REAL
# every test here reads the real frames: skipped (or failed in CI) without them
pytestmark = pytest.mark.usefixtures('real_nuscenes_root')
INFO_A = REAL / 'infos' / 'sample_a_infos_v2.pkl'
PC_MIN, BEV_CELL, BEV_CELLS = -54.0, 0.075 * 8, 180
MAP_CLASSES = 6


def real_sample_a(ds_cfg) -> dict:
    """Sample A through the test pipeline, plus GT boxes and a map mask."""
    pipeline = [copy.deepcopy(t) for t in ds_cfg.test_pipeline
                if t['type'] != 'LoadBEVMapMasks']
    at = [t['type'] for t in pipeline].index('LoadMultiViewImages') + 1
    pipeline[at:at] = [
        dict(type='LoadAnnotations3D', with_bbox_3d=True,
             with_label_3d=True)]
    pack = pipeline.pop()
    assert pack['type'] == 'PackMultiTaskInputs'
    pipeline += [
        dict(type='ObjectRangeFilter', point_cloud_range=ds_cfg.geometry.point_cloud_range),
        dict(type='ObjectNameFilter', classes=ds_cfg.class_names),
        dict(pack, keys=['points', 'img', 'gt_bboxes_3d', 'gt_labels_3d'])]
    dataset = DATASETS.build(dict(
        type='NuScenesMultiTaskDataset', data_root=str(REAL),
        ann_file=str(INFO_A), data_prefix=ds_cfg.data_prefix,
        pipeline=pipeline, metainfo=dict(classes=ds_cfg.class_names),
        modality=ds_cfg.modality, with_det=True, with_map=False,
        test_mode=False, box_type_3d='LiDAR'))
    item = dataset[0]
    masks = torch.zeros((MAP_CLASSES, 200, 200), dtype=torch.bool)
    masks[0, 90:110, :] = True  # a road along x: y in [-5, 5) m
    masks[5, 100, :] = True  # its centre divider
    item['data_samples'].gt_masks_bev = masks
    return item


@pytest.fixture(scope='module')
def full():
    """(model in eval mode, the raw item, the preprocessed batch)."""
    if not INFO_A.is_file():
        raise FileNotFoundError(f'{INFO_A} is missing: the real nuScenes '
                                'frames must lie in ../shared/nuscenes-real')
    # random weights (no torchvision download), seed 0
    model = build_model_from_config(FULL).eval()
    item = real_sample_a(load_config(str(DATASET)))
    batch = model.data_preprocessor(pseudo_collate([item]), training=False)
    return model, item, batch


def point_cells(points: torch.Tensor) -> np.ndarray:
    """(Y, X) bool: BEV cells (0.6 m, row = y) holding at least one point."""
    idx = np.floor((points[:, :2].numpy() - PC_MIN) / BEV_CELL).astype(int)
    idx = idx[((idx >= 0) & (idx < BEV_CELLS)).all(1)]
    occupied = np.zeros((BEV_CELLS, BEV_CELLS), dtype=bool)
    occupied[idx[:, 1], idx[:, 0]] = True
    return occupied


def dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    return np.any([padded[dy:dy + h, dx:dx + w] for dy in range(3)
                   for dx in range(3)], axis=0)


def test_modality_and_shared_bev_grids(full):
    model, item, batch = full
    inputs = batch['inputs']
    assert inputs['imgs'].shape == (1, 6, 3, 256, 704)
    with torch.no_grad():
        cam_bev = model.extract_camera_bev(inputs)
        lidar_bev = model.extract_lidar_bev(inputs)
        assert cam_bev.shape == (1, 80, BEV_CELLS, BEV_CELLS)
        assert lidar_bev.shape == (1, 256, BEV_CELLS, BEV_CELLS)
        shared = model.decoder(model.fuser([cam_bev, lidar_bev]))
    assert shared.shape == (1, 512, BEV_CELLS, BEV_CELLS)
    for bev in (cam_bev, lidar_bev, shared):
        assert torch.isfinite(bev).all()
    assert cam_bev.abs().sum() > 0

    occupied = point_cells(inputs['points'][0])
    assert occupied.sum() > 1000  # a real scan, not an empty frame
    nonzero = (lidar_bev[0] != 0).any(0).numpy()
    stray = nonzero & ~dilate(occupied)
    missed = occupied & ~dilate(nonzero)
    assert not stray.any(), f'{stray.sum()} LiDAR BEV cells far from points'
    assert not missed.any(), f'{missed.sum()} point cells without features'
    # the check can fail: the transposed (x <-> y) map violates it
    assert (nonzero.T & ~dilate(occupied)).sum() > 100


def test_predict_boxes_and_masks(full):
    model, item, batch = full
    model.eval()
    with torch.no_grad():
        out = model(**copy.deepcopy(batch), mode='predict')
    assert len(out) == 1
    pred = out[0].pred_instances_3d
    assert isinstance(pred.bboxes_3d, LiDARInstance3DBoxes)
    assert pred.bboxes_3d.tensor.shape[1] == 9  # x y z l w h yaw vx vy
    assert 0 < len(pred.bboxes_3d) <= model.heads['det'].num_proposals
    assert len(pred.scores_3d) == len(pred.labels_3d) == len(pred.bboxes_3d)
    assert torch.isfinite(pred.bboxes_3d.tensor).all()
    masks = out[0].pred_masks_bev
    assert masks.shape == (MAP_CLASSES, 200, 200)
    assert 0 <= masks.min() <= masks.max() <= 1


def test_loss_on_real_boxes(full):
    model, item, batch = full
    gt = item['data_samples'].gt_instances_3d
    assert len(gt.bboxes_3d) > 20  # Sample A: cars, pedestrians, barriers
    model.train()
    try:
        with torch.no_grad():  # no backward at this size on CPU
            losses = model(**copy.deepcopy(batch), mode='loss')
    finally:
        model.eval()
    assert {'det/loss_heatmap', 'det/loss_cls', 'det/loss_bbox',
            'seg/loss_drivable_area', 'seg/loss_divider'} <= set(losses)
    for name, value in losses.items():
        assert torch.isfinite(torch.as_tensor(value)).all(), name
    assert losses['det/loss_heatmap'] > 0 and losses['det/loss_cls'] > 0

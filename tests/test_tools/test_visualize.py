"""Prediction pictures (fuller.visualization, tools/analysis/visualize.py).

- A GT box drawn by the visualiser covers the image pixels where the
  generator rendered that object (the generator's per-pixel object ids).
- The BEV panel's axes on a non-square grid: +x right, +y up, masks and
  boxes where their metric coordinates say.
- Submission boxes (global frame, made by mmdet3d's own converter) come back
  to the LiDAR frame; the tool draws the generated and the real frames.
"""
import json

import cv2
import matplotlib
import numpy as np
import pytest

matplotlib.use('Agg')

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fuller.structures.frames import BEVGrid  # noqa: E402
from fuller.visualization import (BOX_EDGES, BoxSet, CameraView,  # noqa: E402
                                  SampleView, bev_footprints, box_corners, draw_bev,
                                  draw_camera, load_info_file,
                                  nusc_results_to_lidar)
from fuller.visualization.sample_figure import (MAP_ALPHA,  # noqa: E402
                                                MAP_COLOURS)
from fuller.testing import load_script  # noqa: E402

CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle',
           'bicycle', 'motorcycle', 'pedestrian', 'traffic_cone', 'barrier')
SYNTH = dict(seed=0, keyframes=4, image_size=(352, 198))  # conftest fixture


def _tool(repo_root):
    return load_script(repo_root / 'tools' / 'analysis' / 'visualize.py', 'visualize_tool')


# ------------------------------------------------------------ box geometry
def test_box_corners_heading_by_hand():
    # l=4 along +x rotated by +90 deg: the heading points to +y
    box = np.array([[10.0, 5.0, 1.0, 4.0, 2.0, 2.0, np.pi / 2]])
    corners = box_corners(box)[0]
    assert np.allclose(corners[:, 2].min(), 0.0)    # gravity centre z=1, h=2
    assert np.allclose(corners[:, 2].max(), 2.0)
    assert np.allclose(np.sort(np.unique(corners[:, 0].round(6))), [9, 11])
    assert np.allclose(np.sort(np.unique(corners[:, 1].round(6))), [3, 7])
    outline, heading = bev_footprints(box)
    assert np.allclose(heading[0], [[10, 5], [10, 7]])
    # the footprint is the 2 m x 4 m rectangle walked around (no bow tie):
    # shoelace area = l * w
    ring = outline[0]
    area = 0.5 * abs(np.dot(ring[:, 0], np.roll(ring[:, 1], -1)) -
                     np.dot(ring[:, 1], np.roll(ring[:, 0], -1)))
    assert np.isclose(area, 8.0)
    # each of the 12 edges runs along one box axis, with length l, w or h
    local = corners - [10.0, 5.0, 1.0]
    for i, j in BOX_EDGES:
        step = np.abs(local[j] - local[i])
        assert np.count_nonzero(step > 1e-6) == 1, (i, j)
        assert np.isclose(step.max(), 4.0) or np.isclose(step.max(), 2.0)
    assert len({frozenset(e) for e in BOX_EDGES}) == 12


# ----------------------------------- GT box on the generator's own pixels
def _render(layout, k, cam, rig, only=None):
    """Render camera ``cam`` of keyframe ``k`` as the generator does, with
    all boxes or only box ``only``: (visible pixel counts, owner map)."""
    from fuller.data_prep.synthetic import KEYFRAME_US
    from fuller.data_prep.synthetic.render import GroundRaster, render_camera
    from fuller.data_prep.synthetic.sensors import CAMERA_TIME_OFFSETS_US
    from fuller.data_prep.synthetic.traffic import boxes_at
    t = (k * KEYFRAME_US + CAMERA_TIME_OFFSETS_US[cam]) * 1e-6
    xy, yaw = layout.ego_pose(np.array([t]))
    origin, rot = rig.pose(cam, xy[0], float(yaw[0]))
    boxes = boxes_at(layout, t)
    if only is not None:
        boxes = {key: v[only:only + 1] for key, v in boxes.items()}
    ground = GroundRaster(layout.map_elements, (0.0, 0.0, 1.0, 1.0))
    _, vis, _, owner = render_camera(origin, rot, rig.cam2img[cam],
                                     SYNTH['image_size'], rig.rays[cam],
                                     boxes, ground, return_owner=True)
    return vis, owner


def _static_objects_in_view(layout, k, cam, rig):
    """[(object index, full-scene owner mask, silhouette)] of static objects
    with >= 150 visible pixels whose silhouette (the object rendered alone)
    the image border does not cut."""
    vis, owner = _render(layout, k, cam, rig)
    found = []
    for i in np.argsort(-vis[:len(layout.objects)]):
        if vis[i] < 150:
            break
        if layout.objects[i].track.speed != 0:
            continue
        _, alone = _render(layout, k, cam, rig, only=i)
        silhouette = alone == 0
        if not (silhouette[0].any() or silhouette[-1].any() or
                silhouette[:, 0].any() or silhouette[:, -1].any()):
            found.append((int(i), owner == i, silhouette))
    return found


def _lidar_centre(layout, obj_index, k, info):
    """The object's gravity centre at keyframe k in the info's lidar frame
    (local -> global by the scene offset, which the ego pose reveals)."""
    from fuller.data_prep.synthetic import KEYFRAME_US
    from fuller.data_prep.synthetic.traffic import boxes_at
    t = k * KEYFRAME_US * 1e-6
    ego_local, _ = layout.ego_pose(np.array([t]))
    ego2global = np.asarray(info['ego2global'])
    offset = np.r_[ego2global[:2, 3] - ego_local[0], 0.0]
    centre_global = boxes_at(layout, t)['centre'][obj_index] + offset
    lidar2global = ego2global @ np.asarray(info['lidar_points']['lidar2ego'])
    return np.linalg.solve(lidar2global, np.r_[centre_global, 1.0])[:3]


def _drawn_segments(cam_view, gt):
    fig = Figure(figsize=(4, 2.25), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw_camera(ax, cam_view, gt, None)
    lines = [c for c in ax.collections if c.get_gid() == 'gt']
    assert len(lines) == 1
    return np.asarray(lines[0].get_segments())


def test_gt_box_lands_on_generator_pixels(synthetic_dataroot):
    from fuller.data_prep.synthetic import scene_layout
    from fuller.data_prep.synthetic.records import make_token
    from fuller.data_prep.synthetic.simulate import SensorRig
    from fuller.structures import CAMERAS
    infos = load_info_file(str(synthetic_dataroot / 'nuscenes_infos_train.pkl'))
    scene0 = make_token(SYNTH['seed'], 'scene', 0)   # train scenes come first
    layout = scene_layout(SYNTH['seed'], 0, SYNTH['keyframes'])
    rig = SensorRig(SYNTH['image_size'])
    checked = 0
    for k in range(SYNTH['keyframes']):
        info = next(i for i in infos
                    if i['token'] == make_token(SYNTH['seed'], 'sample', 0, k))
        assert info['scene_token'] == scene0
        img = cv2.imread(str(synthetic_dataroot / 'samples' / 'CAM_FRONT' /
                             info['images']['CAM_FRONT']['img_path']))
        assert img.shape[:2] == SYNTH['image_size'][::-1]
        for cam in CAMERAS:
            for obj_index, visible, silhouette in \
                    _static_objects_in_view(layout, k, cam, rig)[:2]:
                centre = _lidar_centre(layout, obj_index, k, info)
                gt = [inst for inst in info['instances']
                      if np.linalg.norm(np.asarray(inst['bbox_3d'][:3]) -
                                        centre) < 1e-3]
                if not gt:   # not annotated (no LiDAR/radar returns)
                    continue
                rec = info['images'][cam]
                view = CameraView(cam, np.zeros((198, 352, 3), np.uint8),
                                  np.asarray(rec['lidar2cam']),
                                  np.asarray(rec['cam2img']))
                segs = _drawn_segments(
                    view, BoxSet(np.asarray([gt[0]['bbox_3d']]), [0]))
                assert len(segs) == 12      # whole box in front: no clipping
                # the outline of a convex box is the hull of its corners;
                # the generator's pixel (row j, col i) is centred at (i, j)
                # in cam2img pixels (fuller.structures.frames), as in cv2
                hull = cv2.convexHull(segs.reshape(-1, 2).astype(np.float32))
                drawn = np.zeros(silhouette.shape, np.uint8)
                cv2.fillConvexPoly(drawn, np.round(
                    hull[:, 0] * 16).astype(np.int32), 1, cv2.LINE_8, 4)
                drawn = drawn.astype(bool)
                iou = (drawn & silhouette).sum() / (drawn | silhouette).sum()
                assert iou > 0.9, (cam, k, obj_index, iou)
                # extent within 2 px: info boxes are upright in the LiDAR
                # frame (yaw only, as nuScenes / mmdet3d infos), which the
                # real LIDAR_TOP calibration tilts ~1 deg against the ground
                # the generator stands boxes on (~1 px here)
                rows, cols = np.nonzero(silhouette)
                drows, dcols = np.nonzero(drawn)
                for a, b in ((rows, drows), (cols, dcols)):
                    assert abs(a.min() - b.min()) <= 2
                    assert abs(a.max() - b.max()) <= 2
                # where the object shows in the real image, the box is drawn
                assert (visible & drawn).sum() >= 0.95 * visible.sum()
                checked += 1
        if checked >= 4:
            break
    assert checked >= 2, 'too few whole static objects in the test scene'


# ------------------------------------------- BEV axes on a non-square grid
def _display_rgb(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float)


def test_bev_panel_axes_on_non_square_grid():
    grid = BEVGrid((-30.0, 50.0), (-20.0, 20.0), 1.0)   # X = 80, Y = 40
    assert grid.shape == (40, 80)
    masks = np.zeros((1, 40, 80), bool)
    # drivable area where 20 <= x < 40 and 5 <= y < 15 (iy = y + 20)
    masks[0, 25:35, 50:70] = True
    pred = masks.astype(np.float32)
    point = np.array([[35.0, -15.0, 0.0, 0.0]])     # far right, low
    box = BoxSet([[25.0, -10.0, 1.0, 4.0, 2.0, 1.5, 0.0]], [0])
    view = SampleView('tok', point, [], box, CLASSES, gt_masks=masks,
                      pred_masks=pred, map_grid=grid,
                      map_classes=('drivable_area', ),
                      ego_forward=np.array([0.0, 1.0]))
    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    draw_bev(ax, view, grid.x_range, grid.y_range, legend=False)
    ax.set_title('')
    rgb = _display_rgb(fig)
    height = rgb.shape[0]

    def to_pixel(x, y):  # data -> (column, row) of the rendered image
        dx, dy = ax.transData.transform((x, y))
        return dx, height - dy

    # the filled mask: pixels of the blended drivable-area colour
    from matplotlib.colors import to_rgb
    colour = np.asarray(to_rgb(MAP_COLOURS['drivable_area'])) * 255
    blend = MAP_ALPHA * colour + (1 - MAP_ALPHA) * 255
    hit = np.abs(rgb - blend).max(-1) < 4
    rows, cols = np.nonzero(hit)
    assert hit.sum() > 500
    left, top = to_pixel(20.0, 15.0)
    right, bottom = to_pixel(40.0, 5.0)
    assert abs(cols.min() - left) <= 2 and abs(cols.max() - right) <= 2
    assert abs(rows.min() - top) <= 2 and abs(rows.max() - bottom) <= 2
    # +x right, +y up on screen
    ox, oy = to_pixel(0.0, 0.0)
    assert left > ox and right > ox and top < oy and bottom < oy
    # the equal aspect keeps metres square on the 80 m x 40 m grid
    assert abs((right - left) / (bottom - top) - 2.0) < 0.05
    # the predicted-mask outline encloses the same cells
    from matplotlib.collections import LineCollection, PathCollection
    from matplotlib.contour import ContourSet
    contour = next(c for c in ax.collections if isinstance(c, ContourSet))
    verts = np.concatenate(contour.allsegs[0])
    assert verts[:, 0].min() > 19 and verts[:, 0].max() < 41
    assert verts[:, 1].min() > 4 and verts[:, 1].max() < 16
    # the point is drawn bottom right
    px, py = to_pixel(35.0, -15.0)
    assert px > ox and py > oy
    scatter = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatter) == 1
    assert np.allclose(scatter[0].get_offsets(), [[35.0, -15.0]])
    # the GT box outline spans x 23..27, y -11..-9 in data units, its
    # heading tick runs from the centre to +x
    boxes = [c for c in ax.collections if isinstance(c, LineCollection)
             and not isinstance(c, ContourSet)]
    assert len(boxes) == 1
    segs = np.asarray(boxes[0].get_segments())
    assert len(segs) == 5                                # 4 sides + heading
    pts = segs.reshape(-1, 2)
    assert np.allclose(pts.min(0), [23, -11]) and np.allclose(pts.max(0),
                                                              [27, -9])
    assert np.allclose(segs[-1], [[25, -10], [27, -10]])
    hx0, _ = to_pixel(25, -10)
    hx1, _ = to_pixel(27, -10)
    assert hx1 > hx0


# -------------------------------------- submission boxes -> lidar frame
def _mmdet3d_global_entries(boxes_lidar, info, scores):
    """Global-frame submission entries made by mmdet3d's NuScenesMetric
    helpers (the converter tools/test.py uses)."""
    import torch
    from mmdet3d.evaluation.metrics.nuscenes_metric import (
        lidar_nusc_box_to_global, output_to_nusc_box)
    from mmdet3d.structures import LiDARInstance3DBoxes
    from nuscenes.eval.detection.config import config_factory
    with_velocity = np.concatenate(  # (M, 9): vx = vy = 0
        [np.asarray(boxes_lidar, np.float64)[:, :7],
         np.zeros((len(boxes_lidar), 2))], 1)
    bottom = LiDARInstance3DBoxes(torch.as_tensor(with_velocity), box_dim=9,
                                  origin=(0.5, 0.5, 0.5))
    det = dict(bboxes_3d=bottom, scores_3d=torch.as_tensor(scores),
               labels_3d=torch.zeros(len(scores), dtype=torch.long))
    nusc_boxes, _ = output_to_nusc_box(det)
    nusc_boxes = lidar_nusc_box_to_global(info, nusc_boxes, CLASSES,
                                          config_factory('detection_cvpr_2019'))
    return [dict(sample_token=info['token'], translation=b.center.tolist(),
                 size=b.wlh.tolist(), rotation=b.orientation.elements.tolist(),
                 detection_name='car', detection_score=float(b.score))
            for b in nusc_boxes]


def test_submission_boxes_back_to_lidar(real_nuscenes_root):
    info = load_info_file(str(real_nuscenes_root / 'infos' /
                              'sample_a_infos_v2.pkl'))[0]
    boxes = np.array([[5.0, 12.0, -0.8, 4.5, 1.9, 1.6, 0.3],
                      [-8.0, -20.0, -0.5, 0.6, 0.7, 1.7, -2.5]])
    entries = _mmdet3d_global_entries(boxes, info, [0.9, 0.4])
    assert len(entries) == 2
    back = nusc_results_to_lidar(entries, info['ego2global'],
                                 info['lidar_points']['lidar2ego'], CLASSES)
    assert np.allclose(back['boxes'][:, :6], boxes[:, :6], atol=1e-4)
    dyaw = np.angle(np.exp(1j * (back['boxes'][:, 6] - boxes[:, 6])))
    assert np.abs(dyaw).max() < 1e-4
    assert np.allclose(back['scores'], [0.9, 0.4])
    assert back['labels'].tolist() == [0, 0]


# ------------------------------------------------------------- the tool
def test_tool_draws_results_file_and_real_frames(synthetic_dataroot,
                                                 real_nuscenes_root,
                                                 repo_root, tmp_path):
    tool = _tool(repo_root)
    config = str(repo_root / 'configs' / 'fuller' /
                 'fuller_tiny_1xb2-24e_synthetic-nus.py')
    infos = load_info_file(str(synthetic_dataroot / 'nuscenes_infos_val.pkl'))
    info = infos[0]
    gt = np.asarray([inst['bbox_3d'] for inst in info['instances']][:3])
    results = dict(meta={}, results={
        info['token']: _mmdet3d_global_entries(gt, info, [0.8] * len(gt))})
    res_file = tmp_path / 'results_nusc.json'
    res_file.write_text(json.dumps(results))
    out = tmp_path / 'synthetic'
    tool.main([config, '--results', str(res_file), '--data-root',
               str(synthetic_dataroot), '--tokens', info['token'],
               '--out-dir', str(out)])
    png = cv2.imread(str(out / f'{info["token"]}.png'))
    assert png is not None and png.shape[1] > 1.5 * png.shape[0]
    # the real frames: GT only, no map cache
    out = tmp_path / 'real'
    tool.main([config, '--data-root', str(real_nuscenes_root), '--ann-file',
               'infos/sample_a_infos_v2.pkl', '--samples', '1',
               '--out-dir', str(out)])
    token = 'ca9a282c9e77460f8360f564131a8af5'
    assert cv2.imread(str(out / f'{token}.png')) is not None
    with pytest.raises(KeyError, match='not in the info file'):
        tool.main([config, '--data-root', str(real_nuscenes_root),
                   '--ann-file', 'infos/sample_a_infos_v2.pkl', '--tokens',
                   'nope', '--out-dir', str(out)])

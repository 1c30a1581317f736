"""Geometry of the prediction pictures: box corners, image projection and
conversion of nuScenes submission boxes back to the LiDAR frame.

Shape shorthand: M boxes, P points, E box edges.

Frames (see :mod:`fuller.structures.frames`): ``lidar`` (the keyframe's
LIDAR_TOP; in nuScenes x points right and y forward of the car), ``ego``,
``global``, ``cam`` (x right, y down, z forward) and ``img`` (pixel centres
at integer (u, v), u = column, v = row). Transforms are ``a2b`` 4x4 matrices
acting on column vectors.

Boxes are ``(M, 7)`` arrays ``[x, y, z, l, w, h, yaw]`` in the ``lidar``
frame with (x, y, z) the *gravity* centre, as the info files store them
(``instances[i].bbox_3d``); yaw turns from +x towards +y and the box length
``l`` lies along its heading. Corners come from mmdet3d's
``LiDARInstance3DBoxes`` (the boxes the model predicts), in its order::

    index  local (x, y, z) offset     index  local (x, y, z) offset
      0    (-l/2, -w/2, -h/2)           4    (+l/2, -w/2, -h/2)
      1    (-l/2, -w/2, +h/2)           5    (+l/2, -w/2, +h/2)
      2    (-l/2, +w/2, +h/2)           6    (+l/2, +w/2, +h/2)
      3    (-l/2, +w/2, -h/2)           7    (+l/2, +w/2, -h/2)

so the bottom face is corners 0, 3, 7, 4 and the front face (+x local, the
heading) is corners 4, 5, 6, 7.
"""
from typing import Dict, Sequence, Tuple

import numpy as np
from mmdet3d.structures import LiDARInstance3DBoxes

# the 12 edges of a box in mmdet3d's corner order (see the module docstring)
BOX_EDGES = ((0, 3), (3, 7), (7, 4), (4, 0),   # bottom face
             (1, 2), (2, 6), (6, 5), (5, 1),   # top face
             (0, 1), (3, 2), (7, 6), (4, 5))   # vertical edges
# bottom corners in ring order (the BEV footprint) and the front pair
FOOTPRINT = (0, 4, 7, 3)
FRONT_BOTTOM = (4, 7)
NEAR_PLANE = 0.1  # m: box edges are clipped to z_cam >= NEAR_PLANE


def as_boxes(boxes, what: str = 'boxes') -> np.ndarray:
    """Check and return an (M, 7) float64 array (M may be 0)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 7))
    if arr.ndim != 2 or arr.shape[1] < 7:
        raise ValueError(f'{what}: expected (M, 7) [x, y, z, l, w, h, yaw], '
                         f'got shape {arr.shape}')
    return arr[:, :7]


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(M, 7) gravity-centre boxes -> (M, 8, 3) corners (lidar frame)."""
    boxes = as_boxes(boxes)
    if not len(boxes):
        return np.zeros((0, 8, 3))
    lidar_boxes = LiDARInstance3DBoxes(boxes, box_dim=7, origin=(0.5, 0.5, 0.5))
    return lidar_boxes.corners.numpy().astype(np.float64)


def bev_footprints(boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """BEV outlines (M, 4, 2) and heading segments (M, 2, 2), centre to the
    middle of the front edge, both in lidar (x, y)."""
    boxes = as_boxes(boxes)
    corners = box_corners(boxes)[..., :2]
    front = corners[:, list(FRONT_BOTTOM)].mean(1)
    heading = np.stack([boxes[:, :2], front], 1)
    return corners[:, list(FOOTPRINT)], heading


def transform_points(a2b: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 3) points in frame a -> frame b (4x4 ``a2b``)."""
    a2b = np.asarray(a2b, dtype=np.float64)
    return points @ a2b[:3, :3].T + a2b[:3, 3]


def project_cam_points(cam2img: np.ndarray, points_cam: np.ndarray
                       ) -> np.ndarray:
    """(P, 3) camera-frame points with z > 0 -> (P, 2) pixel (u, v)."""
    k = np.eye(4)
    cam2img = np.asarray(cam2img, dtype=np.float64)
    k[:cam2img.shape[0], :cam2img.shape[1]] = cam2img
    uvw = points_cam @ k[:3, :3].T + k[:3, 3]
    return uvw[:, :2] / uvw[:, 2:3]


def box_edges_in_image(corners_lidar: np.ndarray, lidar2cam: np.ndarray,
                       cam2img: np.ndarray, image_hw: Tuple[int, int],
                       near: float = NEAR_PLANE) -> np.ndarray:
    """The edges of one box as drawn in one camera.

    Each edge is clipped to the part in front of the camera (z_cam >= near)
    before projection, so boxes beside or behind the camera do not produce
    lines across the image.

    Args:
        corners_lidar: (8, 3) corners in the lidar frame.
        lidar2cam, cam2img: (4, 4) and (3, 3) or (4, 4) matrices.
        image_hw: (H, W) of the image the pixels refer to.

    Returns:
        (E, 2, 2) pixel segments [[u0, v0], [u1, v1]]; E = 0 when the box
        does not reach into the image.
    """
    pts = transform_points(lidar2cam, np.asarray(corners_lidar, np.float64))
    starts, ends = [], []
    for i, j in BOX_EDGES:
        a, b = pts[i], pts[j]
        if a[2] < near and b[2] < near:
            continue
        if a[2] < near:
            a = a + (b - a) * (near - a[2]) / (b[2] - a[2])
        elif b[2] < near:
            b = b + (a - b) * (near - b[2]) / (a[2] - b[2])
        starts.append(a)
        ends.append(b)
    if not starts:
        return np.zeros((0, 2, 2))
    seg = np.stack([project_cam_points(cam2img, np.stack(starts)),
                    project_cam_points(cam2img, np.stack(ends))], 1)
    h, w = image_hw
    lo, hi = seg.reshape(-1, 2).min(0), seg.reshape(-1, 2).max(0)
    if hi[0] < -0.5 or lo[0] > w - 0.5 or hi[1] < -0.5 or lo[1] > h - 0.5:
        return np.zeros((0, 2, 2))
    return seg


def nusc_results_to_lidar(entries: Sequence[dict], ego2global: np.ndarray,
                          lidar2ego: np.ndarray,
                          class_names: Sequence[str]
                          ) -> Dict[str, np.ndarray]:
    """Boxes of one sample from a nuScenes submission (global frame) into
    the sample's lidar frame.

    Args:
        entries: the ``results[sample_token]`` list: dicts with
            ``translation`` (gravity centre), ``size`` (w, l, h),
            ``rotation`` (quaternion w, x, y, z), ``detection_name``,
            ``detection_score``.
        ego2global, lidar2ego: (4, 4) of the sample's keyframe LiDAR.
        class_names: label order; unknown names get label -1.

    Returns:
        dict(boxes=(M, 7) gravity-centre lidar boxes, scores=(M,),
        labels=(M,) int).
    """
    global2lidar = np.linalg.inv(np.asarray(ego2global, np.float64) @
                                 np.asarray(lidar2ego, np.float64))
    boxes, scores, labels = [], [], []
    for k, entry in enumerate(entries):
        try:
            centre = np.asarray(entry['translation'], np.float64)
            width, length, height = (float(v) for v in entry['size'])
            quat = np.asarray(entry['rotation'], np.float64)
            name, score = entry['detection_name'], entry['detection_score']
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f'nuScenes result box {k} of sample '
                             f'{entry.get("sample_token", "?")} is malformed '
                             f'({type(err).__name__}: {err})') from err
        rot_lidar = global2lidar[:3, :3] @ _quat_to_matrix(quat)
        boxes.append([*transform_points(global2lidar, centre[None])[0],
                      length, width, height,
                      np.arctan2(rot_lidar[1, 0], rot_lidar[0, 0])])
        scores.append(float(score))
        labels.append(list(class_names).index(name)
                      if name in class_names else -1)
    return dict(boxes=as_boxes(boxes), scores=np.asarray(scores, np.float64),
                labels=np.asarray(labels, np.int64))


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> 3x3 rotation (pyquaternion's)."""
    from pyquaternion import Quaternion
    return Quaternion(q).normalised.rotation_matrix


def points_in_range(points: np.ndarray, x_range: Sequence[float],
                    y_range: Sequence[float]) -> np.ndarray:
    """Boolean mask of (P, >=2) points inside an x/y window."""
    return ((points[:, 0] >= x_range[0]) & (points[:, 0] < x_range[1]) &
            (points[:, 1] >= y_range[0]) & (points[:, 1] < y_range[1]))

"""Sensors of the synthetic nuScenes scenes: LIDAR_TOP ray casting, a radar
point count and six pinhole cameras rendered with a z-buffer.

Shape shorthand: R rays, M boxes, H x W image pixels, P points.

Frames (see :mod:`fuller.structures.frames`): ``sensor`` (LIDAR_TOP: x right,
y forward, z up for the real mounting; camera: x right, y down, z forward),
``ego`` (x forward, y left, z up, origin on the ground below the rear axle)
and ``local`` (the scene's map frame; ground plane z = 0).
A ray is ``origin + t * dir`` with ``dir`` of unit length, so ``t`` is metres.
"""
from typing import Dict, Tuple

import numpy as np

# Real nuScenes calibrations, copied from the calibrated_sensor records of
# sample ca9a282c9e77460f8360f564131a8af5 (v1.0-mini scene-0061, log
# n015-2018-07-24-11-22-45+0800): translation (m, ego frame), rotation
# (quaternion w, x, y, z, sensor -> ego) and, for cameras, fx, cx, cy of the
# 1600 x 900 intrinsics (fx == fy, zero skew).
REAL_IMAGE_SIZE = (1600, 900)
LIDAR_CALIB = dict(
    translation=(0.943713, 0.0, 1.84023),
    rotation=(0.7077955119163518, -0.006492242056004365,
              0.010646214713995808, -0.7063073142877817))
CAMERA_CALIBS = {
    'CAM_FRONT': ((1.70079118954, 0.0159456324149, 1.51095763913),
                  (0.4998015430569128, -0.5030316162024876,
                   0.4997798114386805, -0.49737083824542755),
                  (1266.417203046554, 816.2670197447984, 491.50706579294757)),
    'CAM_FRONT_RIGHT': ((1.5508477543, -0.493404796419, 1.49574800619),
                        (0.2060347966337182, -0.2026940577919598,
                         0.6824507824531167, -0.6713610884174485),
                        (1260.8474446004698, 807.968244525554,
                         495.3344268742088)),
    'CAM_BACK_RIGHT': ((1.0148780988, -0.480568219723, 1.56239545128),
                       (0.12280980120078765, -0.132400842670559,
                        -0.7004305821388234, 0.690496031265798),
                       (1259.5137405846733, 807.2529053838625,
                        501.19579884916527)),
    'CAM_BACK': ((0.0283260309358, 0.00345136761476, 1.57910346144),
                 (0.5037872666382278, -0.49740249788611096,
                  -0.4941850223835201, 0.5045496097725578),
                 (809.2209905677063, 829.2196003259838, 481.77842384512485)),
    'CAM_BACK_LEFT': ((1.03569100218, 0.484795032713, 1.59097014818),
                      (0.6924185592174665, -0.7031619420114925,
                       -0.11648342771943819, 0.11203317912370753),
                      (1256.7414812095406, 792.1125740759628,
                       492.7757465151356)),
    'CAM_FRONT_LEFT': ((1.52387798135, 0.494631336551, 1.50932822144),
                       (0.6757265034669446, -0.6736266522251881,
                        0.21214015046209478, -0.21122827103904068),
                       (1272.5979470598488, 826.6154927353808,
                        479.75165386361925)),
}
# Camera shutter times relative to the LIDAR_TOP keyframe in that sample (us).
CAMERA_TIME_OFFSETS_US = {
    'CAM_FRONT': -35491, 'CAM_FRONT_RIGHT': -27612, 'CAM_BACK_RIGHT': -20058,
    'CAM_BACK': -10426, 'CAM_BACK_LEFT': -528, 'CAM_FRONT_LEFT': -43107}
# Sensor tokens of the real nuScenes sensor table.
SENSOR_TOKENS = {
    'CAM_FRONT': '725903f5b62f56118f4094b46a4470d8',
    'CAM_BACK': 'ce89d4f3050b5892b33b3d328c5e82a3',
    'CAM_BACK_LEFT': 'a89643a5de885c6486df2232dc954da2',
    'CAM_FRONT_LEFT': 'ec4b5d41840a509984f7ec36419d4c09',
    'CAM_FRONT_RIGHT': '2f7ad058f1ac5557bf321c7543758f43',
    'CAM_BACK_RIGHT': 'ca7dba2ec9f95951bbe67246f7f2c3f7',
    'LIDAR_TOP': 'dc8b396651c05aedbb9cdaae573bb567'}

# 32-beam spinning LiDAR (HDL-32E-like): elevations, range.
LIDAR_ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)
LIDAR_MAX_RANGE = 80.0
RADAR_HEIGHT, RADAR_RAYS, RADAR_MAX_RANGE = 0.5, 720, 100.0
LIGHT = np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82])
SKY_TOP, SKY_HORIZON = np.array([95., 140., 205.]), np.array([200., 210., 222.])
NEAR = 0.05  # camera near plane (m)


def quat_to_matrix(q) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> 3x3 rotation matrix."""
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def yaw_to_quat(yaw: float) -> Tuple[float, float, float, float]:
    return (float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2)))


def scaled_intrinsic(channel: str, image_size: Tuple[int, int]) -> np.ndarray:
    """3x3 cam2img for images resized from 1600 x 900 to ``image_size``."""
    f, cx, cy = CAMERA_CALIBS[channel][2]
    sx = image_size[0] / REAL_IMAGE_SIZE[0]
    sy = image_size[1] / REAL_IMAGE_SIZE[1]
    return np.array([[f * sx, 0., cx * sx], [0., f * sy, cy * sy],
                     [0., 0., 1.]])


def lidar_directions(num_azimuths: int) -> np.ndarray:
    """(R, 3) unit rays in the LiDAR frame, azimuth-major, ring = beam."""
    az = np.arange(num_azimuths) * (2 * np.pi / num_azimuths)
    el = np.deg2rad(LIDAR_ELEVATIONS_DEG)
    az, el = np.meshgrid(az, el, indexing='ij')
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                     np.sin(el)], -1).reshape(-1, 3)


def box_corners(boxes: Dict[str, np.ndarray]) -> np.ndarray:
    """(M, 8, 3) corners; bit 0/1/2 of the index picks +x/+y/+z (box axes:
    x along the heading with half-length l/2, y with w/2, z with h/2)."""
    bits = np.array([[(i >> k) & 1 for k in range(3)] for i in range(8)])
    signs = bits * 2 - 1.0
    w, l, h = boxes['size'].T
    local = signs[None] * np.stack([l, w, h], -1)[:, None] / 2
    c, s = np.cos(boxes['yaw'])[:, None], np.sin(boxes['yaw'])[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], -1) + boxes['centre'][:, None]


def slab_intersect(origin: np.ndarray, dirs: np.ndarray, centre, size, yaw):
    """Entry and exit distance of rays (R, 3) through one upright box.

    Returns (t_in, t_out, hit): hit where the ray enters the box in front of
    the origin.
    """
    c, s = np.cos(yaw), np.sin(yaw)
    rel = origin - centre
    o = np.array([c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2]])
    d = np.stack([c * dirs[:, 0] + s * dirs[:, 1],
                  -s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2]], 1)
    half = np.array([size[1], size[0], size[2]]) / 2
    with np.errstate(divide='ignore', invalid='ignore'):
        inv = 1.0 / d
        t1, t2 = (-half - o) * inv, (half - o) * inv
    t_in = np.fmin(t1, t2).max(1)
    t_out = np.fmax(t1, t2).min(1)
    return t_in, t_out, (t_in <= t_out) & (t_in > 1e-6)


def _angular_candidates(origin, boxes, max_range, az0, n_az, elevations):
    """Per box, the indices of the rays that can reach it.

    Rays are on an azimuth x elevation grid: ray ``a * E + e`` points at
    azimuth ``az0 + a * 2 pi / n_az`` and elevation ``elevations[e]`` (both
    up to ~1 degree of sensor tilt) in the local frame.
    """
    step = 2 * np.pi / n_az
    margin = np.deg2rad(1.5)
    corners = box_corners(boxes)[..., :2] - origin[:2]
    centre = boxes['centre'][:, :2] - origin[:2]
    dist = np.hypot(*centre.T)
    half_diag = np.hypot(boxes['size'][:, 0], boxes['size'][:, 1]) / 2
    near, far = np.maximum(dist - half_diag, 0.1), dist + half_diag
    az_c = np.arctan2(centre[:, 1], centre[:, 0])
    rel = np.angle(np.exp(1j * (np.arctan2(corners[..., 1], corners[..., 0]) -
                                az_c[:, None])))
    lo = np.floor((az_c + rel.min(1) - margin - az0) / step).astype(int)
    hi = np.ceil((az_c + rel.max(1) + margin - az0) / step).astype(int)
    z_lo = boxes['centre'][:, 2] - boxes['size'][:, 2] / 2 - origin[2]
    z_hi = z_lo + boxes['size'][:, 2]
    el_lo = np.arctan2(z_lo, np.where(z_lo < 0, near, far)) - margin
    el_hi = np.arctan2(z_hi, np.where(z_hi > 0, near, far)) + margin
    e_lo = np.searchsorted(elevations, el_lo)
    e_hi = np.searchsorted(elevations, el_hi, side='right')
    ok = (near < max_range) & (np.ptp(rel, 1) < np.pi) & (e_hi > e_lo)
    per_az = len(elevations)
    for b in np.flatnonzero(ok):
        az_idx = np.arange(lo[b], hi[b] + 1) % n_az
        yield b, (az_idx[:, None] * per_az +
                  np.arange(e_lo[b], e_hi[b])).ravel()


def cast_rays(origin, dirs, boxes, max_range, az0: float,
              elevations: np.ndarray):
    """Nearest box hit per ray of an azimuth grid (see _angular_candidates).

    Returns t_in, t_out (R,) and the box index (R,) (-1: no box).
    """
    t_in = np.full(len(dirs), np.inf)
    t_out = np.full(len(dirs), np.inf)
    idx = np.full(len(dirs), -1)
    for b, sel in _angular_candidates(origin, boxes, max_range, az0,
                                      len(dirs) // len(elevations),
                                      elevations):
        a, e, hit = slab_intersect(origin, dirs[sel], boxes['centre'][b],
                                   boxes['size'][b], boxes['yaw'][b])
        better = hit & (a < t_in[sel])
        rays = sel[better]
        t_in[rays], t_out[rays], idx[rays] = a[better], e[better], b
    return t_in, t_out, idx


def _lidar_hits(origin, sensor2local_rot, dirs_sensor, boxes):
    """Range (R,) to the first return (inf: none within range), whether it is
    a box, the box index (R,) and the ray directions in the local frame."""
    dirs = dirs_sensor @ sensor2local_rot.T
    t_ground = np.full(len(dirs), np.inf)
    down = dirs[:, 2] < -1e-9
    t_ground[down] = -origin[2] / dirs[down, 2]
    az0 = np.arctan2(sensor2local_rot[1, 0], sensor2local_rot[0, 0])
    t_in, t_out, idx = cast_rays(origin, dirs, boxes, LIDAR_MAX_RANGE, az0,
                                 np.deg2rad(LIDAR_ELEVATIONS_DEG))
    on_box = (idx >= 0) & (t_in < t_ground)
    t = t_ground.copy()
    # box returns sit 2 cm inside the box so that they count as inside it
    t[on_box] = t_in[on_box] + np.minimum(
        0.02, 0.5 * (t_out[on_box] - t_in[on_box]))
    t[t > LIDAR_MAX_RANGE] = np.inf
    return t, on_box, idx, dirs


def lidar_box_counts(origin, sensor2local_rot, dirs_sensor, boxes):
    """LiDAR returns per box (M,) of one sweep."""
    t, on_box, idx, _ = _lidar_hits(origin, sensor2local_rot, dirs_sensor,
                                    boxes)
    return np.bincount(idx[on_box & np.isfinite(t)],
                       minlength=len(boxes['yaw']))


def _clamp_into_boxes(points, idx, boxes, inset: float = 0.01):
    """Move box returns (P, 3) at least ``inset`` inside their box (P,), so
    that rounding never puts them on or past a face."""
    c, s = np.cos(boxes['yaw'][idx]), np.sin(boxes['yaw'][idx])
    rel = points - boxes['centre'][idx]
    local = np.stack([c * rel[:, 0] + s * rel[:, 1],
                      -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], 1)
    half = boxes['size'][idx][:, [1, 0, 2]] / 2 - inset
    local = np.clip(local, -half, half)
    return boxes['centre'][idx] + np.stack(
        [c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1],
         local[:, 2]], 1)


def lidar_sweep(origin, sensor2local_rot, dirs_sensor, boxes, ground,
                rng) -> Tuple[np.ndarray, np.ndarray]:
    """One LiDAR sweep.

    Returns points (P, 5) float32 (x, y, z, intensity, ring) in the LiDAR
    frame, and the box index (P,) of each point (-1: ground).
    """
    t, on_box, idx, dirs = _lidar_hits(origin, sensor2local_rot,
                                       dirs_sensor, boxes)
    ring = np.tile(np.arange(len(LIDAR_ELEVATIONS_DEG)),
                   len(dirs) // len(LIDAR_ELEVATIONS_DEG))
    noise = rng.normal(0, 2, len(t))
    keep = np.isfinite(t)
    t, on_box, idx, dirs = t[keep], on_box[keep], idx[keep], dirs[keep]
    points = origin + t[:, None] * dirs  # local frame
    points[on_box] = _clamp_into_boxes(points[on_box], idx[on_box], boxes)
    intensity = np.where(on_box, boxes['intensity'][np.maximum(idx, 0)],
                         ground.intensity_at(points[:, :2]))
    intensity = np.clip(np.round(intensity + noise[keep]), 0, 255)
    points = np.concatenate([(points - origin) @ sensor2local_rot,
                             intensity[:, None], ring[keep, None]], 1)
    return points.astype(np.float32), np.where(on_box, idx, -1)


def radar_counts(ego_xy, ego_yaw, boxes, num_objects: int) -> np.ndarray:
    """Radar returns per object: hits of a horizontal 360-degree scan at radar height."""
    origin = np.array([ego_xy[0], ego_xy[1], RADAR_HEIGHT])
    az = ego_yaw + np.arange(RADAR_RAYS) * (2 * np.pi / RADAR_RAYS)
    dirs = np.stack([np.cos(az), np.sin(az), np.zeros_like(az)], 1)
    t_in, _, idx = cast_rays(origin, dirs, boxes, RADAR_MAX_RANGE, ego_yaw,
                             np.zeros(1))
    idx = np.where(t_in <= RADAR_MAX_RANGE, idx, -1)
    return np.bincount(idx[idx >= 0], minlength=len(boxes['yaw']))[:num_objects]

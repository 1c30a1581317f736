"""Ground texture and camera images of the synthetic nuScenes scenes.

Shape shorthand: M boxes, H x W image pixels.

Frames: ``local`` (scene map frame, ground plane z = 0), ``cam`` (x right,
y down, z forward) and ``img`` (u right, v down), in the pixel convention of
:mod:`fuller.structures.frames`: pixel centres sit at integer (u, v), pixel
(row j, column i) covers u in [i - .5, i + .5), v in [j - .5, j + .5), so a
point projected to (u, v) by ``cam2img`` lies on pixel (round(v), round(u)).

Images are rendered per pixel, pixel (j, i) along the ray through
(u, v) = (i, j): the ground colour comes from a ray / ground plane
intersection looked up in a 0.1 m texture of the map; box faces are
rasterised (cv2 in fixed point, whose integer coordinates are these pixel
centres; every pixel a projected face touches) and depth-tested against a
per-pixel z-buffer (ray distance), so occlusion is exact for any box
arrangement. Faces are flat-shaded by a fixed sun direction; rays that hit
nothing show a sky gradient.
"""
from typing import Dict, Tuple

import cv2
import numpy as np

from .sensors import LIGHT, NEAR, SKY_HORIZON, SKY_TOP, box_corners

# (RGB, LiDAR intensity) of ground materials
GRASS, ASPHALT = ((92, 108, 72), 8), ((72, 74, 78), 6)
CARPARK, WALKWAY = ((100, 100, 104), 10), ((168, 162, 150), 20)
PAINT = dict(white=((230, 230, 224), 70), yellow=((215, 180, 60), 60))
# box faces: corner indices (cyclic) and local outward normal axis / sign
FACES = (((1, 3, 7, 5), 0, 1.), ((0, 2, 6, 4), 0, -1.),
         ((2, 3, 7, 6), 1, 1.), ((0, 1, 5, 4), 1, -1.), ((4, 5, 7, 6), 2, 1.))
MAX_DIST = 1000.0  # farthest rendered ground (m)
SKY_LEVELS = 64


class GroundRaster:
    """Colour and LiDAR-intensity texture of the ground plane.

    Args:
        elements: map records of :func:`scene.build_road_map`.
        bounds: (x_min, y_min, x_max, y_max) of the textured area (local).
        res: texel size in metres; texel (row iy, col ix) covers
            [x_min + ix * res, +res) x [y_min + iy * res, +res).
    """

    def __init__(self, elements: dict, bounds, res: float = 0.1):
        self.x0, self.y0, self.res = float(bounds[0]), float(bounds[1]), res
        w = int(np.ceil((bounds[2] - bounds[0]) / res))
        h = int(np.ceil((bounds[3] - bounds[1]) / res))
        self.rgb = np.empty((h, w, 3), np.uint8)
        self.rgb[:] = GRASS[0]
        self.shape = (h, w)
        self.intensity = np.full((h, w), GRASS[1], np.uint8)
        for poly in elements['drivable_area']:
            self._fill(poly, *ASPHALT)
        for rec in elements['carpark_area']:
            self._fill(rec['polygon'], *CARPARK)
        for poly in elements['walkway']:
            self._fill(poly, *WALKWAY)
        for rec in elements['ped_crossing']:
            self._zebra(rec['polygon'], np.asarray(rec['walk_dir'], float))
        for rec in elements['stop_line']:
            self._fill(rec['polygon'], *PAINT['white'])
        for line, width, colour in elements['paint']:
            rgb, inten = PAINT[colour]
            pts = [self._px(line)]
            thick = max(1, int(round(width / res)))
            cv2.polylines(self.rgb, pts, False, rgb, thick, cv2.LINE_8, 3)
            cv2.polylines(self.intensity, pts, False, inten, thick,
                          cv2.LINE_8, 3)

    def _px(self, xy) -> np.ndarray:
        """Local xy -> cv2 fixed-point (shift 3) texel coordinates."""
        xy = np.asarray(xy, float)[:, :2]
        uv = (xy - [self.x0, self.y0]) / self.res - 0.5
        return np.round(uv * 8).astype(np.int32)

    def _fill(self, polygon, rgb, intensity):
        rings = [self._px(polygon.exterior.coords)]
        rings += [self._px(r.coords) for r in polygon.interiors]
        cv2.fillPoly(self.rgb, rings, rgb, cv2.LINE_8, 3)
        cv2.fillPoly(self.intensity, rings, intensity, cv2.LINE_8, 3)

    def _zebra(self, polygon, walk_dir):
        """Stripes 0.5 m wide, 1 m apart along the walking direction."""
        mask = np.zeros(self.intensity.shape, np.uint8)
        cv2.fillPoly(mask, [self._px(polygon.exterior.coords)], 1,
                     cv2.LINE_8, 3)
        iy, ix = np.nonzero(mask)
        x = self.x0 + (ix + 0.5) * self.res
        y = self.y0 + (iy + 0.5) * self.res
        c = np.asarray(polygon.centroid.coords[0])
        stripe = np.mod((x - c[0]) * walk_dir[0] + (y - c[1]) * walk_dir[1],
                        1.0) < 0.5
        self.rgb[iy, ix] = np.where(stripe[:, None], PAINT['white'][0],
                                    ASPHALT[0])
        self.intensity[iy, ix] = np.where(stripe, PAINT['white'][1],
                                          ASPHALT[1])

    def _flat_index(self, xy):
        """Texel index of local xy (N, 2); texels outside -> h * w."""
        h, w = self.shape
        ix = np.floor((xy[:, 0] - self.x0) / self.res)
        iy = np.floor((xy[:, 1] - self.y0) / self.res)
        inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        return np.where(inside, iy * w + ix, h * w).astype(np.int64)

    def colour_rgbx(self, xy: np.ndarray) -> np.ndarray:
        """Ground colours packed as uint32 (bytes R, G, B, 0) (N,)."""
        if not hasattr(self, '_rgbx'):  # 4-byte texels: one gather per px
            rgbx = np.zeros(self.shape + (4, ), np.uint8)
            rgbx[..., :3] = self.rgb
            self._rgbx = np.append(rgbx.view(np.uint32).ravel(),
                                   pack_rgb(np.array([GRASS[0]]))[0])
        return np.take(self._rgbx, self._flat_index(xy))

    def colour_at(self, xy: np.ndarray) -> np.ndarray:
        return unpack_rgb(self.colour_rgbx(xy))

    def intensity_at(self, xy: np.ndarray) -> np.ndarray:
        if not hasattr(self, '_intensity_flat'):
            self._intensity_flat = np.append(self.intensity.ravel(), GRASS[1])
        return np.take(self._intensity_flat, self._flat_index(xy)).astype(
            float)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) colours 0..255 -> (N,) uint32 with bytes R, G, B, 0."""
    rgbx = np.zeros((len(rgb), 4), np.uint8)
    rgbx[:, :3] = np.clip(np.round(rgb), 0, 255)
    return rgbx.view(np.uint32).ravel()


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    return packed.view(np.uint8).reshape(-1, 4)[:, :3]


def pixel_rays(cam2img: np.ndarray, image_size: Tuple[int, int]) -> np.ndarray:
    """(H * W, 3) unit rays in the camera frame through the pixel centres
    (u, v) = (column, row), row-major (pixel index = row * W + column)."""
    w, h = image_size
    u, v = np.meshgrid(np.arange(w, dtype=np.float32),
                       np.arange(h, dtype=np.float32))
    pix = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3)
    rays = (pix @ np.linalg.inv(cam2img).T).astype(np.float32)
    return rays / np.sqrt((rays * rays).sum(1, keepdims=True))


def _clip(poly: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Clip a convex polygon (n, k) to the half-space f >= 0 (f: (n,))."""
    out = []
    for i in range(len(poly)):
        j = (i + 1) % len(poly)
        if f[i] >= 0:
            out.append(poly[i])
        if (f[i] >= 0) != (f[j] >= 0):
            out.append(poly[i] + (poly[j] - poly[i]) * (f[i] / (f[i] - f[j])))
    return np.array(out).reshape(-1, poly.shape[1])


def _face_pixels(poly_cam, cam2img, image_size):
    """Flat pixel indices (row * W + column) that a box face, given in
    camera coordinates, covers; a projected point (u, v) falls on pixel
    (round(v), round(u))."""
    w, h = image_size
    poly = poly_cam
    if (poly[:, 2] < NEAR).any():
        poly = _clip(poly, poly[:, 2] - NEAR)
        if len(poly) < 3:
            return None
    uv = (poly @ cam2img.T)
    uv = uv[:, :2] / uv[:, 2:]
    if np.abs(uv).max() > 2 * w:  # keep cv2's fixed-point coordinates small
        for axis, lo, hi in ((0, -w, 2 * w), (1, -h, 2 * h)):
            uv = _clip(uv, uv[:, axis] - lo)
            if len(uv) >= 3:
                uv = _clip(uv, hi - uv[:, axis])
            if len(uv) < 3:
                return None
    x0, y0 = np.floor(uv.min(0)).astype(int)
    x1, y1 = np.ceil(uv.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    pts = np.round((uv - [x0, y0]) * 16).astype(np.int32)  # cv2: centre = int
    cv2.fillConvexPoly(mask, pts, 1, cv2.LINE_8, 4)
    iy, ix = np.nonzero(mask)
    return (iy + y0) * w + ix + x0


def render_camera(origin: np.ndarray, cam2local_rot: np.ndarray,
                  cam2img: np.ndarray, image_size: Tuple[int, int],
                  rays_cam: np.ndarray, boxes: Dict[str, np.ndarray],
                  ground: GroundRaster, return_owner: bool = False):
    """Render one image.

    Returns the image (H, W, 3) uint8 RGB and, per box, the number of pixels
    where it is visible and where it would be visible without occluders.
    With ``return_owner`` a fourth value follows: (H, W) int32, the index
    (into ``boxes``) of the box seen at each pixel, -1 for ground and sky
    (the image and counts are the same either way).
    """
    w, h = image_size
    dirs = rays_cam @ cam2local_rot.T.astype(np.float32)
    with np.errstate(divide='ignore'):
        zbuf = np.where(dirs[:, 2] < -1e-6, -origin[2] / dirs[:, 2], np.inf)
    zbuf[zbuf > MAX_DIST] = np.inf
    face_id = np.full(w * h, -1, np.int32)
    corners = box_corners(boxes)
    corners_cam = (corners - origin) @ cam2local_rot
    total = np.zeros(len(boxes['yaw']), np.int64)
    face_box, face_rgb = [], []
    normals, offsets = _face_planes(boxes, corners, origin)
    for b in _boxes_in_view(corners_cam, cam2img, image_size):
        for f, (idx, _, _) in enumerate(FACES):
            if offsets[b, f] >= 0:  # back face
                continue
            pix = _face_pixels(corners_cam[b, list(idx)], cam2img, image_size)
            if pix is None or not len(pix):
                continue
            total[b] += len(pix)
            t = offsets[b, f] / (dirs[pix] @ normals[b, f])
            upd = t < zbuf[pix]
            zbuf[pix[upd]] = t[upd]
            face_id[pix[upd]] = len(face_box)
            face_box.append(b)
            face_rgb.append(boxes['colour'][b] *
                            (0.45 + 0.55 * max(0., normals[b, f] @ LIGHT)))
    image = _shade(origin, dirs, zbuf, face_id, face_rgb, ground)
    visible = np.bincount(np.asarray(face_box, np.int64)[face_id[face_id >= 0]],
                          minlength=len(total))
    if return_owner:  # face_id -1 picks the appended -1
        owner = np.asarray(face_box + [-1], np.int32)[face_id]
        return image.reshape(h, w, 3), visible, total, owner.reshape(h, w)
    return image.reshape(h, w, 3), visible, total


_SKY_TABLE = pack_rgb(SKY_HORIZON + (SKY_TOP - SKY_HORIZON) *
                      np.linspace(0, 1, SKY_LEVELS)[:, None])


def _face_planes(boxes, corners, origin):
    """Outward face normals (M, F, 3) and plane offsets n . (p - origin)
    (M, F); a face is visible from the origin when its offset is < 0."""
    c, s = np.cos(boxes['yaw']), np.sin(boxes['yaw'])
    zero, one = np.zeros_like(c), np.ones_like(c)
    axes = np.stack([np.stack([c, s, zero], -1), np.stack([-s, c, zero], -1),
                     np.stack([zero, zero, one], -1)], 1)  # (M, 3, 3)
    normals = np.stack([sign * axes[:, axis] for _, axis, sign in FACES], 1)
    first = corners[:, [idx[0] for idx, _, _ in FACES]] - origin
    return normals, np.einsum('mfk,mfk->mf', normals, first)


def _boxes_in_view(corners_cam, cam2img, image_size):
    """Indices of boxes that may cover a pixel (cheap frustum test)."""
    w, h = image_size
    front = corners_cam[..., 2] > NEAR
    uvw = corners_cam @ cam2img.T
    with np.errstate(divide='ignore', invalid='ignore'):
        uv = uvw[..., :2] / uvw[..., 2:]
    lo, hi = uv.min(1), uv.max(1)
    outside = (hi[:, 0] < 0) | (lo[:, 0] > w) | (hi[:, 1] < 0) | \
        (lo[:, 1] > h)
    # boxes crossing the near plane are kept (their projection is unbounded)
    keep = front.any(1) & ~(front.all(1) & outside)
    return np.flatnonzero(keep)


def _shade(origin, dirs, zbuf, face_id, face_rgb, ground):
    """Pixel colours from the z-buffer: face colour, ground texture or a sky
    gradient (all as packed uint32 colours: 1-D gathers and selects)."""
    hit = np.isfinite(zbuf)
    dist = np.where(hit, zbuf, 0)
    xy = np.stack([origin[0] + dist * dirs[:, 0],
                   origin[1] + dist * dirs[:, 1]], 1)
    packed = ground.colour_rgbx(xy)
    if face_rgb:
        table = pack_rgb(np.concatenate([np.zeros((1, 3)), face_rgb]))
        packed = np.where(face_id >= 0, np.take(table, face_id + 1), packed)
    level = (np.sqrt(np.clip(dirs[:, 2], 0, 1)) * (SKY_LEVELS - 1) + 0.5)
    sky = np.take(_SKY_TABLE, level.astype(np.int32))
    return unpack_rgb(np.where(hit, packed, sky))

"""Draw one sample: a BEV panel and the six camera images (headless, Agg).

The BEV panel is drawn in the keyframe ``lidar`` frame, in metres, with the
sensor at the origin: +x to the right, +y up (matplotlib's data axes, map
masks shown with ``origin='lower'`` so mask row 0 = smallest y sits at the
bottom). On nuScenes LIDAR_TOP, +y is the car's forward direction, so the
car drives up the page; the ego arrow shows it.

Shown: LiDAR points (dark dots), GT boxes (green) and predicted boxes
(red, with score) as footprints with a heading tick, GT map masks as filled
colour overlays, predicted map masks as outlines at probability 0.5, a
legend. Cameras show the same boxes projected (edges clipped at the near
plane).
"""
from typing import Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fuller.utils.io import atomic_open

from .geometry import (bev_footprints, box_corners, box_edges_in_image,
                       points_in_range)
from .sample_view import BoxSet, CameraView, SampleView

GT_COLOUR = '#00d000'
PRED_COLOUR = '#ff2020'
MAP_COLOURS = {
    'drivable_area': '#9ecae1', 'ped_crossing': '#f781bf',
    'walkway': '#fdae6b', 'stop_line': '#e6ab02',
    'carpark_area': '#a1d99b', 'divider': '#6a3d9a'}
OTHER_MAP_COLOUR = '#bdbdbd'
MAP_ALPHA = 0.55
MASK_THRESHOLD = 0.5
CAMERA_GRID = (('CAM_FRONT_LEFT', 'CAM_FRONT', 'CAM_FRONT_RIGHT'),
               ('CAM_BACK_LEFT', 'CAM_BACK', 'CAM_BACK_RIGHT'))
DEFAULT_RANGE = ((-54.0, 54.0), (-54.0, 54.0))


def _rgba(colour: str, alpha: float = 1.0) -> np.ndarray:
    from matplotlib.colors import to_rgba
    return np.asarray(to_rgba(colour, alpha))


def mask_overlay(masks: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """(C, Y, X) bool -> (Y, X, 4) RGBA, later classes painted on top."""
    out = np.zeros(masks.shape[1:] + (4, ))
    for mask, name in zip(masks, classes):
        out[mask] = _rgba(MAP_COLOURS.get(name, OTHER_MAP_COLOUR), MAP_ALPHA)
    return out


def draw_bev(ax, view: SampleView,
             x_range: Tuple[float, float] = DEFAULT_RANGE[0],
             y_range: Tuple[float, float] = DEFAULT_RANGE[1],
             score_thr: float = 0.3, legend: bool = True) -> None:
    """The BEV panel of ``view`` on ``ax`` (see the module docstring)."""
    grid = view.map_grid
    handles = []
    if view.gt_masks is not None:
        extent = (*grid.x_range, *grid.y_range)
        ax.imshow(mask_overlay(view.gt_masks, view.map_classes),
                  origin='lower', extent=extent, interpolation='nearest',
                  zorder=1)
    if view.pred_masks is not None:
        ys, xs = grid.cell_centers()
        for prob, name in zip(view.pred_masks, view.map_classes):
            if (prob >= MASK_THRESHOLD).any() and (prob < MASK_THRESHOLD).any():
                ax.contour(xs, ys, prob, levels=[MASK_THRESHOLD],
                           colors=[MAP_COLOURS.get(name, OTHER_MAP_COLOUR)],
                           linewidths=1.2, zorder=2)
    if view.gt_masks is not None or view.pred_masks is not None:
        for name in view.map_classes:
            colour = MAP_COLOURS.get(name, OTHER_MAP_COLOUR)
            handles.append(Patch(facecolor=_rgba(colour, MAP_ALPHA),
                                 edgecolor=colour, label=name))
    keep = points_in_range(view.points, x_range, y_range)
    ax.scatter(view.points[keep, 0], view.points[keep, 1], s=0.15,
               c='#303030', linewidths=0, rasterized=True, zorder=3)
    _draw_bev_boxes(ax, view.gt, GT_COLOUR, None, zorder=4)
    if view.pred is not None:
        _draw_bev_boxes(ax, view.pred.above(score_thr), PRED_COLOUR,
                        view.class_names, zorder=5)
    fwd = view.ego_forward * 4.0
    ax.annotate('', xy=(fwd[0], fwd[1]), xytext=(0, 0), zorder=6,
                arrowprops=dict(arrowstyle='-|>', color='black', lw=1.5))
    ax.plot([0], [0], marker='o', ms=4, color='black', zorder=6)
    handles = [Line2D([], [], color=GT_COLOUR, label='GT box'),
               Line2D([], [], color=PRED_COLOUR,
                      label=f'predicted box (score >= {score_thr:g})'),
               Line2D([], [], color='black', marker='>',
                      label='ego (forward)')] + handles
    if view.pred_masks is not None:
        handles.append(Line2D([], [], color='grey', lw=1.2,
                              label=f'predicted map (p >= {MASK_THRESHOLD:g})'))
    ax.set_xlim(*x_range)
    ax.set_ylim(*y_range)
    ax.set_aspect('equal')
    ax.set_xlabel('x (m)')
    ax.set_ylabel('y (m)')
    ax.set_title('BEV, LiDAR (LIDAR_TOP) frame; filled map = GT', fontsize=9)
    ax.tick_params(labelsize=7)
    if legend:
        ax.legend(handles=handles, loc='upper left', fontsize=6,
                  framealpha=0.8, ncol=2)


def _draw_bev_boxes(ax, boxes: BoxSet, colour: str,
                    class_names: Optional[Sequence[str]], zorder: int) -> None:
    if not len(boxes.boxes):
        return
    outlines, heading = bev_footprints(boxes.boxes)
    closed = np.concatenate([outlines, outlines[:, :1]], 1)
    segs = [np.stack([c[i], c[i + 1]]) for c in closed for i in range(4)]
    ax.add_collection(LineCollection(segs + list(heading), colors=colour,
                                     linewidths=1.0, zorder=zorder))
    if boxes.scores is None:
        return
    for box, score in zip(boxes.boxes, boxes.scores):
        ax.text(box[0], box[1] + 0.6 * max(box[3], box[4]), f'{score:.2f}',
                fontsize=5, color=colour, ha='center', zorder=zorder,
                clip_on=True)


def camera_segments(boxes: BoxSet, cam: CameraView) -> np.ndarray:
    """All edges of ``boxes`` as drawn in ``cam``: (E, 2, 2) pixels."""
    segs = [box_edges_in_image(c, cam.lidar2cam, cam.cam2img,
                               cam.image.shape[:2])
            for c in box_corners(boxes.boxes)]
    segs = [s for s in segs if len(s)]
    return np.concatenate(segs) if segs else np.zeros((0, 2, 2))


def draw_camera(ax, cam: CameraView, gt: Optional[BoxSet],
                pred: Optional[BoxSet]) -> None:
    """The image with GT (green) and predicted (red) boxes projected; data
    coordinates are pixels (centres at integers, v down)."""
    h, w = cam.image.shape[:2]
    ax.imshow(cam.image, interpolation='antialiased')
    for boxes, colour, gid in ((gt, GT_COLOUR, 'gt'),
                               (pred, PRED_COLOUR, 'pred')):
        if boxes is None or not len(boxes.boxes):
            continue
        segs = camera_segments(boxes, cam)
        if len(segs):
            lines = LineCollection(segs, colors=colour, linewidths=0.8)
            lines.set_gid(gid)
            ax.add_collection(lines)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_title(cam.name, fontsize=8)
    ax.set_axis_off()


def render_sample(view: SampleView, score_thr: float = 0.3,
                  bev_range: Tuple[Tuple[float, float],
                                   Tuple[float, float]] = DEFAULT_RANGE,
                  dpi: int = 90) -> Figure:
    """The whole picture: BEV panel left, cameras in two rows right."""
    fig = Figure(figsize=(21, 7.2), dpi=dpi)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(2, 4, width_ratios=(1.3, 1, 1, 1), wspace=0.03,
                          hspace=0.08, left=0.03, right=0.995, top=0.9,
                          bottom=0.07)
    draw_bev(fig.add_subplot(gs[:, 0]), view, *bev_range, score_thr=score_thr)
    by_name = {c.name: c for c in view.cameras}
    pred = None if view.pred is None else view.pred.above(score_thr)
    for r, row in enumerate(CAMERA_GRID):
        for c, name in enumerate(row):
            ax = fig.add_subplot(gs[r, c + 1])
            if name in by_name:
                draw_camera(ax, by_name[name], view.gt, pred)
            else:
                ax.set_axis_off()
    n_pred = 0 if pred is None else len(pred.boxes)
    fig.suptitle(f'{view.title + ": " if view.title else ""}sample '
                 f'{view.token}  ({len(view.gt.boxes)} GT boxes, '
                 f'{n_pred} predicted with score >= {score_thr:g})',
                 fontsize=11)
    return fig


def save_figure(fig: Figure, path: str) -> None:
    """Write ``fig`` as a PNG, atomically."""
    with atomic_open(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=fig.dpi)

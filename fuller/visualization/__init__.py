"""Pictures of predictions (BEV panel + six cameras) and training curves.

Headless: everything draws on matplotlib ``Figure`` objects with the Agg
canvas, never through pyplot. Not imported by ``fuller/__init__.py`` (only
the analysis tools need matplotlib).
"""
from .geometry import (BOX_EDGES, bev_footprints, box_corners,
                       box_edges_in_image, nusc_results_to_lidar)
from .predictions import map_grid_of_pipeline, merge_map_prediction
from .sample_figure import (camera_segments, draw_bev, draw_camera,
                            render_sample, save_figure)
from .sample_view import (BoxSet, CameraView, SampleView, load_info_file,
                          load_results_file, load_sample_view,
                          results_for_info)
from .training_curves import (load_scalars, plot_task_losses,
                              task_loss_series)

__all__ = [
    'BOX_EDGES', 'bev_footprints', 'box_corners', 'box_edges_in_image',
    'nusc_results_to_lidar', 'map_grid_of_pipeline', 'merge_map_prediction',
    'camera_segments', 'draw_bev', 'draw_camera', 'render_sample',
    'save_figure', 'BoxSet', 'CameraView', 'SampleView', 'load_info_file',
    'load_results_file', 'load_sample_view', 'results_for_info',
    'load_scalars', 'plot_task_losses', 'task_loss_series'
]

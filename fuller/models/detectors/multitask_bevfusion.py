"""MultiTaskBEVFusion: camera + LiDAR BEV fusion with a detection and a map
segmentation head on one shared BEV map, with FULLER's calibration points.

Shape shorthand: B batch, N cameras, H/W input image size, C channels,
Y/X BEV cells (row = y, column = x), M voxels, K tasks.

Data flow (frames in brackets)::

    imgs (B, N, 3, H, W) [img] -> img_backbone -> img_neck -> (B, N, C, fH, fW)
        -> view_transform (cam2img, lidar2cam, img_aug_matrix,
           lidar_aug_matrix) -> camera BEV (B, C_cam, Y, X) [augmented lidar]
    voxels (M, P, 5) [augmented lidar] -> pts_voxel_encoder -> (M, C)
        -> pts_middle_encoder (sparse) -> LiDAR BEV (B, C_lidar, Y, X)
    [calibrator.calibrate_modalities]   <- FULLER intra-gradient calibration
    fuser([camera BEV, LiDAR BEV]) -> fused BEV (B, C_in, Y, X)
        -> decoder -> shared BEV (B, C, Y', X')
    [calibrator.split_shared]           <- FULLER inter-gradient calibration
    heads: det (boxes in the LiDAR frame), seg (map masks on the map grid)

Per-task decoders (``task_decoders``): the listed tasks get a BEV decoder of
their own, so the last layer the tasks share is the fuser; the calibration
then splits the fused map, and each task decodes its own view::

    fused BEV (B, C_in, Y, X) [calibrator.split_shared]
        -> task_decoders[task] (or the shared decoder for unlisted tasks)
        -> that task's BEV (B, C, Y', X') -> heads[task]

Either modality can be switched off by leaving its modules out of the
config (camera-only / LiDAR-only), either task by leaving its head out
(single-task baselines). Losses are returned per task with the prefix
``<task>/`` (e.g. ``det/loss_heatmap``, ``seg/loss_divider``), each scaled by
``loss_weights[task]``; with a ``loss_balancer`` (FAMO) each task's terms are
further scaled by the balancer's factor for the step, and the unbalanced
task totals and task weights are logged as ``famo/task_total/<task>`` and
``famo/weight/<task>``.
"""
import math
from typing import Dict, List, Mapping, Optional, Sequence, Union

from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmdet3d.models.dense_heads import CenterHead
from mmdet3d.models.middle_encoders import SparseEncoder
from mmdet3d.models.detectors import Base3DDetector
from mmdet3d.registry import MODELS

from ...calibration import GradientCalibrator
from ...compat import set_spconv_algo
from ...structures import BEVGrid

TASKS = ('det', 'seg')


def _build(cfg: Optional[dict]) -> Optional[nn.Module]:
    return None if cfg is None else MODELS.build(cfg)


def _head_input(head: nn.Module, shared: Tensor):
    """mmdet3d's CenterHead takes a list of (multi-level) maps; fuller's
    heads take the one shared map."""
    return [shared] if isinstance(head, CenterHead) else shared


@MODELS.register_module()
class MultiTaskBEVFusion(Base3DDetector):
    """BEVFusion-style multi-modal multi-task detector (see module doc).

    Args:
        data_preprocessor: e.g. ``MultiModalDataPreprocessor``.
        img_backbone, img_neck, view_transform: camera branch (all or none).
        pts_voxel_encoder, pts_middle_encoder: LiDAR branch (both or none).
        fuser: merges the modality BEV maps; required with both modalities.
        decoder: BEV backbone + neck producing the shared BEV map.
        det_head, seg_head: task heads; at least one.
        task_decoders: tasks that get a BEV decoder of their own after the
            fuser instead of sharing ``decoder``: a list of task names (each
            gets a copy of the ``decoder`` config, with its own weights) or
            a dict {task: decoder config, or None for a copy of
            ``decoder``}. Empty (default): every task reads the one shared
            decoder's map. ``decoder`` is built only if a task still
            shares it.
        loss_weights: per-task loss scale, default 1.0 each.
        grad_calibrator: kwargs of :class:`GradientCalibrator` (FULLER);
            None trains with the plain summed loss.
        loss_balancer: a loss-rate task weighting, e.g.
            ``dict(type='FAMOWeighting')`` (:mod:`fuller.calibration.famo`,
            driven by ``FAMOHook``); needs both heads and excludes the
            calibrator's task level (both would weight the tasks).
        nan_guard: raise on a non-finite loss, naming task, term and samples.
        train_cfg, test_cfg: accepted only as None (what
            ``mmdet3d.apis.init_model`` passes): the heads own their
            training and testing settings (``det_head.train_cfg``, ...).
    """

    def __init__(self,
                 *,
                 data_preprocessor: Optional[dict] = None,
                 img_backbone: Optional[dict] = None,
                 img_neck: Optional[dict] = None,
                 view_transform: Optional[dict] = None,
                 pts_voxel_encoder: Optional[dict] = None,
                 pts_middle_encoder: Optional[dict] = None,
                 fuser: Optional[dict] = None,
                 decoder: dict,
                 det_head: Optional[dict] = None,
                 seg_head: Optional[dict] = None,
                 task_decoders: Union[Sequence[str],
                                      Mapping[str, Optional[dict]]] = (),
                 loss_weights: Optional[Dict[str, float]] = None,
                 grad_calibrator: Optional[dict] = None,
                 loss_balancer: Optional[dict] = None,
                 nan_guard: bool = True,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg=None) -> None:
        if train_cfg is not None or test_cfg is not None:
            raise ValueError(
                'MultiTaskBEVFusion: train_cfg / test_cfg belong to the heads '
                '(det_head.train_cfg, det_head.test_cfg); the detector takes '
                'only None (what mmdet3d.apis.init_model passes)')
        super().__init__(data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        camera = (img_backbone, img_neck, view_transform)
        if any(c is not None for c in camera) and \
                not all(c is not None for c in camera):
            raise ValueError('MultiTaskBEVFusion: the camera branch needs '
                             'img_backbone, img_neck and view_transform')
        if (pts_voxel_encoder is None) != (pts_middle_encoder is None):
            raise ValueError('MultiTaskBEVFusion: the LiDAR branch needs '
                             'pts_voxel_encoder and pts_middle_encoder')
        self.img_backbone = _build(img_backbone)
        self.img_neck = _build(img_neck)
        self.view_transform = _build(view_transform)
        self.pts_voxel_encoder = _build(pts_voxel_encoder)
        self.pts_middle_encoder = _build(pts_middle_encoder)
        if not (self.with_camera or self.with_lidar):
            raise ValueError('MultiTaskBEVFusion: no modality configured')
        if self.with_camera and self.with_lidar and fuser is None:
            raise ValueError('MultiTaskBEVFusion: camera + LiDAR need a fuser')
        self.fuser = _build(fuser)
        heads = {t: cfg for t, cfg in zip(TASKS, (det_head, seg_head))
                 if cfg is not None}
        if not heads:
            raise ValueError('MultiTaskBEVFusion: no task head configured')
        own = (dict(task_decoders) if isinstance(task_decoders, Mapping)
               else {t: None for t in task_decoders})
        unknown = sorted(set(own) - set(heads))
        if unknown:
            raise ValueError(f'MultiTaskBEVFusion: task_decoders names tasks '
                             f'{unknown} without a head; heads: {sorted(heads)}')
        # Build order (shared decoder, heads, then per-task decoders) keeps
        # the default model's initialisation identical to a model without
        # the option.
        self.decoder = (MODELS.build(decoder) if set(heads) - set(own)
                        else None)
        self.heads = nn.ModuleDict({t: MODELS.build(c)
                                    for t, c in heads.items()})
        self.task_decoders = nn.ModuleDict({
            t: MODELS.build(decoder if own[t] is None else own[t])
            for t in heads if t in own})
        self._check_geometry()
        weights = dict(loss_weights or {})
        unknown = set(weights) - set(TASKS)
        if unknown:
            raise ValueError(f'MultiTaskBEVFusion: loss_weights for unknown '
                             f'tasks {sorted(unknown)}; tasks are {TASKS}')
        self.loss_weights = {t: float(weights.get(t, 1.0)) for t in heads}
        self.grad_calibrator = (None if grad_calibrator is None else
                                GradientCalibrator(**grad_calibrator))
        self.loss_balancer = None
        if loss_balancer is not None:
            if len(heads) < 2:
                raise ValueError('MultiTaskBEVFusion: loss_balancer needs two '
                                 f'task heads; configured: {sorted(heads)}')
            if self.grad_calibrator is not None and \
                    self.grad_calibrator.enable_task:
                raise ValueError(
                    'MultiTaskBEVFusion: loss_balancer and the calibrator\'s '
                    'task level both weight the tasks; set '
                    'grad_calibrator.enable_task=False or drop one')
            self.loss_balancer = MODELS.build(
                dict(loss_balancer, tasks=tuple(heads)))
        self.nan_guard = nan_guard
        self._spconv_device = None

    # -------------------------------------------------------- build checks
    def _lidar_grid(self) -> Optional[BEVGrid]:
        """The LiDAR BEV map's grid: the voxel grid of the preprocessor's
        voxel layer, coarsened by the SparseEncoder's stride (one stride-2
        stage per encoder stage after the first)."""
        layer = getattr(self.data_preprocessor, 'voxel_layer', None)
        encoder = self.pts_middle_encoder
        if layer is None or not isinstance(encoder, SparseEncoder):
            return None
        voxels = BEVGrid.from_point_cloud_range(
            [float(v) for v in layer.point_cloud_range],
            [float(v) for v in layer.voxel_size[:2]])
        if tuple(encoder.sparse_shape[1:]) != voxels.shape:
            raise ValueError(
                'MultiTaskBEVFusion: data_preprocessor.voxel_layer makes a '
                f'(Y, X) = {voxels.shape} voxel grid but pts_middle_encoder has '
                f'sparse_shape {list(encoder.sparse_shape)}')
        stride = 2 ** (len(encoder.encoder_channels) - 1)
        return BEVGrid(voxels.x_range, voxels.y_range,
                       (voxels.cell_size[0] * stride, voxels.cell_size[1] * stride))

    def _head_grid(self, head: nn.Module) -> BEVGrid:
        if isinstance(head, CenterHead):  # mmdet3d's: grid in its train_cfg
            cfg = head.train_cfg
            factor = cfg['out_size_factor']
            return BEVGrid.from_point_cloud_range(
                cfg['point_cloud_range'],
                (cfg['voxel_size'][0] * factor, cfg['voxel_size'][1] * factor))
        return head.input_grid

    def _check_geometry(self) -> None:
        """The modules must agree on the BEV grids (to float rounding) and
        channel counts they hand each other; a mismatch names both modules."""
        def differ(a: BEVGrid, b: BEVGrid) -> bool:
            va = a.x_range + a.y_range + a.cell_size
            vb = b.x_range + b.y_range + b.cell_size
            return not all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
                           for x, y in zip(va, vb))

        def fail(a: str, b: str, what: str, va, vb):
            raise ValueError(f'MultiTaskBEVFusion: {a} and {b} disagree on the '
                             f'{what}: {va} vs {vb} (configs derive both from '
                             'their declared geometry / channels: '
                             'python tools/misc/sync_config.py CONFIG)')

        branch_grids = {}
        if self.with_camera:
            branch_grids['view_transform'] = self.view_transform.output_grid
        lidar = self._lidar_grid()
        if lidar is not None:
            branch_grids['pts_middle_encoder'] = lidar
        names = list(branch_grids)
        if len(names) == 2 and differ(branch_grids[names[0]], branch_grids[names[1]]):
            fail(names[0], names[1], 'BEV grid', branch_grids[names[0]],
                 branch_grids[names[1]])
        if self.fuser is not None and self.with_camera and \
                self.fuser.in_channels[0] != self.view_transform.out_channels:
            fail('view_transform', 'fuser', 'camera BEV channels',
                 self.view_transform.out_channels, self.fuser.in_channels[0])
        for task, head in self.heads.items():
            dec_name = self._decoder_name(task)
            decoder = self.task_decoder(task)
            if self.fuser is not None and self.fuser.out_channels != decoder.in_channels:
                fail('fuser', dec_name, 'fused BEV channels', self.fuser.out_channels,
                     decoder.in_channels)
            if head.in_channels != decoder.out_channels:
                fail(dec_name, f'heads.{task}', 'task map channels',
                     decoder.out_channels, head.in_channels)
            if names:
                grid = decoder.output_grid(branch_grids[names[0]])
                if differ(self._head_grid(head), grid):
                    fail(f'{dec_name} (from {names[0]})', f'heads.{task}',
                         'task map grid', grid, self._head_grid(head))

    # ------------------------------------------------------------ properties
    @property
    def with_camera(self) -> bool:
        return self.view_transform is not None

    @property
    def with_lidar(self) -> bool:
        return self.pts_middle_encoder is not None

    @property
    def tasks(self) -> List[str]:
        return list(self.heads)

    def _decoder_name(self, task: str) -> str:
        return f'task_decoders.{task}' if task in self.task_decoders \
            else 'decoder'

    def task_decoder(self, task: str) -> nn.Module:
        """The BEV decoder whose map ``heads[task]`` reads."""
        if task in self.task_decoders:
            return self.task_decoders[task]
        return self.decoder

    # -------------------------------------------------------------- features
    def extract_camera_bev(self, inputs: dict) -> Tensor:
        imgs = inputs['imgs']  # (B, N, 3, H, W)
        B, N = imgs.shape[:2]
        feats = self.img_neck(self.img_backbone(imgs.flatten(0, 1)))
        if isinstance(feats, (list, tuple)):
            feats = feats[0]
        feats = feats.unflatten(0, (B, N))  # (B, N, C, fH, fW)
        matrices = (inputs['cam2img'], inputs['lidar2cam'],
                    inputs['img_aug_matrix'], inputs['lidar_aug_matrix'])
        if self.view_transform.uses_points:  # DepthLSS
            return self.view_transform(feats, inputs['points'], *matrices)
        return self.view_transform(feats, *matrices)

    def extract_lidar_bev(self, inputs: dict) -> Tensor:
        voxels = inputs['voxels']
        coors = voxels['coors']
        if self._spconv_device != coors.device:
            set_spconv_algo(self.pts_middle_encoder, coors.device)
            self._spconv_device = coors.device
        batch_size = len(inputs['points'])
        if coors.shape[0] == 0:
            raise ValueError('MultiTaskBEVFusion: the batch has no LiDAR '
                             'point inside point_cloud_range (empty scan?)')
        feats = self.pts_voxel_encoder(voxels['voxels'],
                                       voxels['num_points'], coors)
        return self.pts_middle_encoder(feats, coors, batch_size)

    def extract_feat(self, inputs: dict, calibrate: bool = False) -> Tensor:
        """-> the last map every task shares: the decoder's BEV map
        (B, C, Y', X'), or with ``task_decoders`` the fused BEV map
        (B, C_in, Y, X). With ``calibrate`` the modality BEV maps pass
        through the intra-gradient calibration."""
        cam_bev = self.extract_camera_bev(inputs) if self.with_camera \
            else None
        lidar_bev = self.extract_lidar_bev(inputs) if self.with_lidar \
            else None
        if calibrate and self.grad_calibrator is not None:
            cam_bev, lidar_bev = self.grad_calibrator.calibrate_modalities(
                cam_bev, lidar_bev)
        bevs = [f for f in (cam_bev, lidar_bev) if f is not None]
        fused = self.fuser(bevs) if self.fuser is not None else bevs[0]
        return fused if len(self.task_decoders) else self.decoder(fused)

    def task_maps(self, shared: Union[Tensor, Dict[str, Tensor]]
                  ) -> Dict[str, Tensor]:
        """{task: the BEV map (B, C, Y', X') its head reads} from
        ``extract_feat``'s output, one tensor or one view per task (the
        calibrator's ``split_shared``)."""
        per_task = shared if isinstance(shared, dict) else \
            {t: shared for t in self.tasks}
        if not len(self.task_decoders):
            return dict(per_task)
        return {t: self.task_decoder(t)(per_task[t]) for t in self.tasks}

    # ----------------------------------------------------------------- modes
    def loss(self, batch_inputs_dict: dict, batch_data_samples) -> dict:
        shared = self.extract_feat(batch_inputs_dict, calibrate=True)
        if self.grad_calibrator is not None:
            per_task = self.grad_calibrator.split_shared(shared, self.tasks)
        else:
            per_task = {t: shared for t in self.tasks}
        per_task = self.task_maps(per_task)
        losses = {}
        for task, head in self.heads.items():
            task_losses = head.loss(_head_input(head, per_task[task]),
                                    batch_data_samples)
            for name, value in task_losses.items():
                if 'loss' in name:
                    value = value * self.loss_weights[task]
                losses[f'{task}/{name}'] = value
        if self.nan_guard:  # before balancing: it names the samples
            self._check_finite(losses, batch_data_samples)
        if self.loss_balancer is not None:
            losses = self._balance(losses)
        return losses

    def _balance(self, losses: dict) -> dict:
        """Each task's loss terms times the balancer's factor for this step
        (a constant), plus the logged task totals and weights."""
        totals = {}
        for task in self.tasks:
            terms = [v for name, value in losses.items()
                     if name.startswith(f'{task}/') and 'loss' in name
                     for v in (value if isinstance(value, (list, tuple)) else [value])]
            totals[task] = sum(terms)
        factors = self.loss_balancer.factors(totals)
        weights = self.loss_balancer.weights()
        out = {}
        for name, value in losses.items():
            task = name.split('/', 1)[0]
            if 'loss' in name:
                value = ([v * factors[task] for v in value]
                         if isinstance(value, (list, tuple)) else value * factors[task])
            out[name] = value
        for task in self.tasks:
            out[f'famo/task_total/{task}'] = totals[task].detach()
            out[f'famo/weight/{task}'] = weights[task]
        return out

    def _check_finite(self, losses: dict, batch_data_samples) -> None:
        bad = []
        for name, value in losses.items():
            vals = value if isinstance(value, (list, tuple)) else [value]
            for v in vals:
                v = float(v.detach()) if isinstance(v, Tensor) else float(v)
                if not math.isfinite(v):
                    bad.append(f'{name}={v}')
        if bad:
            tokens = [s.metainfo.get('token', s.metainfo.get('sample_idx'))
                      for s in batch_data_samples]
            raise FloatingPointError(
                f'MultiTaskBEVFusion: non-finite losses {bad} in the batch '
                f'of samples {tokens}')

    def predict(self, batch_inputs_dict: dict, batch_data_samples) -> list:
        maps = self.task_maps(self.extract_feat(batch_inputs_dict))
        if 'det' in self.heads:
            head = self.heads['det']
            det_results = head.predict(_head_input(head, maps['det']),
                                       batch_data_samples)
        else:
            det_results = [InstanceData() for _ in batch_data_samples]
        samples = self.add_pred_to_datasample(batch_data_samples, det_results)
        if 'seg' in self.heads:
            masks = self.heads['seg'].predict(maps['seg'], batch_data_samples)
            for sample, mask in zip(samples, masks):
                sample.pred_masks_bev = mask
        return samples

    def _forward(self, batch_inputs_dict: dict, batch_data_samples=None):
        """mode='tensor': the last shared map (``shared_bev``: the decoder's
        map, or the fused map with ``task_decoders``) and each head's raw
        output."""
        shared = self.extract_feat(batch_inputs_dict)
        maps = self.task_maps(shared)
        out = {'shared_bev': shared}
        for task, head in self.heads.items():
            out[task] = head(_head_input(head, maps[task]))
        return out

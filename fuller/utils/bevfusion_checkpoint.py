"""Convert checkpoints of mmdet3d's ``projects/BEVFusion`` to fuller's module
names (and back where the modules are the same).

Reference: open-mmlab/mmdetection3d ``projects/BEVFusion`` (``bevfusion.py``:
detector attributes ``pts_middle_encoder``, ``pts_backbone``, ``pts_neck``,
``fusion_layer``, ``bbox_head``, ``img_backbone``, ``img_neck``,
``vtransform``; ``sparse_encoder.py``: ``BEVFusionSparseEncoder``;
``transfusion_head.py``: ``TransFusionHead`` and the ``ConvFuser``
sequential; ``depth_lss.py``: ``LSSTransform`` / ``DepthLSSTransform``).

Three layout differences are converted, not just renamed:

* **Voxel axis order.** The reference voxelises to (x, y, z) indices and its
  ``BEVFusionSparseEncoder`` is mmdet3d's ``SparseEncoder`` run on that order;
  fuller uses ``SparseEncoder`` on mmdet3d's (z, y, x) order. spconv stores a
  kernel as (C_out, k0, k1, k2, C_in) over the index axes, so the three kernel
  axes are reversed.
* **BEV axis order.** The reference's BEV maps are (B, C, X, Y) (rows = x);
  fuller's are (B, C, Y, X) (rows = y, ``docs: STYLE``). A 2D conv on the
  transposed map with the transposed kernel gives the transposed output, so
  every 2D kernel that runs on a BEV map (decoder, fuser, detection head
  convs, the view transform's BEV downsampling) has its two spatial axes
  swapped. Image-plane convs (backbone, neck, depth net) are unchanged.
* **Class order.** The reference configs list the nuScenes classes in another
  order than mmdet3d's ``NuScenesDataset`` (fuller's); class-indexed rows
  (the heatmap conv, the per-query class logits) and the class-embedding
  columns are permuted by name.

Folded (``FOLDS``): a conv bias right before a BatchNorm that only one side
has (the reference's depth-net convs; fuller's SeparateHead ConvModules).
Subtracting it from the BatchNorm ``running_mean`` gives the same output (in
training the batch mean absorbs a constant bias anyway); converting towards
the side with the bias writes a zero bias.

Not converted (listed in the report with the reason): the TransFusion
decoder layers (a different function, see ``UNMAPPED_REFERENCE``), the
view-transform geometry constants (recomputed from the config) and fuller's
segmentation head (the reference has none).
"""
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

from torch import Tensor

#: nuScenes class order of projects/BEVFusion/configs/*.py (``class_names``).
REFERENCE_CLASSES = ('car', 'truck', 'construction_vehicle', 'bus', 'trailer',
                     'barrier', 'motorcycle', 'bicycle', 'pedestrian',
                     'traffic_cone')

_PLACEHOLDERS = {
    'n': r'\d+',
    'm': r'\d+',
    'rest': r'.+',
    'wb': r'weight|bias',
    'reg': r'center|height|dim|rot|vel',
    'geom': r'dx|bx|nx|frustum',
}

# layout transforms, applied to the tensor of a mapped key
SAME = 'same'
BEV_CONV = 'bev_conv'            # 4-D kernels: swap the two spatial axes
SPARSE_CONV = 'sparse_conv'      # 5-D spconv kernels: reverse kernel axes
CLASS_ROWS = 'class_rows'        # permute dim 0 by class (+ BEV_CONV if 4-D)
CLASS_COLUMNS = 'class_columns'  # Conv1d (H, NC, 1) <-> Linear (H, NC)
FOLD_BIAS = 'fold_bias'          # conv bias -> next BatchNorm running_mean

_VOXEL_NOTE = ('mmdet3d SparseEncoder (the reference subclass runs it on '
               '(x, y, z) voxels): kernel axes reversed to (z, y, x)')
_BEV_NOTE = '2D kernel on the BEV map: spatial axes swapped (X,Y -> Y,X)'


@dataclass(frozen=True)
class Rule:
    """``reference`` and ``fuller`` are key patterns with ``{placeholder}``
    fields (see ``_PLACEHOLDERS``); both sides use the same fields."""
    reference: str
    fuller: str
    transform: str
    note: str


RULES: Tuple[Rule, ...] = (
    # LiDAR branch and BEV decoder (mmdet3d modules on both sides)
    Rule('pts_middle_encoder.{rest}', 'pts_middle_encoder.{rest}',
         SPARSE_CONV, _VOXEL_NOTE),
    Rule('pts_backbone.{rest}', 'decoder.backbone.{rest}', BEV_CONV,
         'mmdet3d SECOND; ' + _BEV_NOTE),
    Rule('pts_neck.{rest}', 'decoder.neck.{rest}', BEV_CONV,
         'mmdet3d SECONDFPN; ' + _BEV_NOTE),
    # fuser: reference nn.Sequential(conv, BN, ReLU) vs fuller ConvModule
    Rule('fusion_layer.0.{wb}', 'fuser.conv.conv.{wb}', BEV_CONV,
         'ConvFuser conv; ' + _BEV_NOTE),
    Rule('fusion_layer.1.{rest}', 'fuser.conv.bn.{rest}', SAME,
         'ConvFuser BatchNorm (eps 1e-5 in the reference, 1e-3 in fuller)'),
    # detection head: the parts that are the same modules
    Rule('bbox_head.shared_conv.{wb}', 'heads.det.shared_conv.{wb}',
         BEV_CONV, 'TransFusion shared conv; ' + _BEV_NOTE),
    Rule('bbox_head.heatmap_head.0.{rest}', 'heads.det.heatmap_head.0.{rest}',
         BEV_CONV, 'heatmap ConvModule; ' + _BEV_NOTE),
    Rule('bbox_head.heatmap_head.1.{wb}', 'heads.det.heatmap_head.1.{wb}',
         CLASS_ROWS, 'heatmap classifier conv; classes permuted, ' +
         _BEV_NOTE),
    Rule('bbox_head.class_encoding.weight',
         'heads.det.class_embedding.weight', CLASS_COLUMNS,
         'class embedding: Conv1d k=1 -> Linear, classes permuted'),
    Rule('bbox_head.class_encoding.bias', 'heads.det.class_embedding.bias',
         SAME, 'class embedding bias'),
    Rule('bbox_head.prediction_heads.{n}.heatmap.{m}.{wb}',
         'heads.det.pred_heads.{n}.cls.{m}.{wb}', CLASS_ROWS,
         'mmdet3d SeparateHead class-logit output conv; classes permuted'),
    Rule('bbox_head.prediction_heads.{n}.heatmap.{rest}',
         'heads.det.pred_heads.{n}.cls.{rest}', SAME,
         'mmdet3d SeparateHead class branch'),
    Rule('bbox_head.prediction_heads.{n}.{reg}.{rest}',
         'heads.det.pred_heads.{n}.{reg}.{rest}', SAME,
         'mmdet3d SeparateHead box branch (same box code)'),
    # camera branch
    Rule('img_backbone.{rest}', 'img_backbone.{rest}', SAME,
         'image backbone (same mmdet class when the configs agree)'),
    Rule('img_neck.{rest}', 'img_neck.{rest}', SAME,
         'GeneralizedLSSFPN: same lateral_convs / fpn_convs ConvModules'),
    Rule('vtransform.dtransform.{rest}', 'view_transform.depth_encoder.{rest}',
         SAME, 'DepthLSS depth encoder (image plane)'),
    Rule('vtransform.depthnet.{rest}', 'view_transform.depth_net.{rest}',
         SAME, 'LSS depth net (image plane)'),
    Rule('vtransform.downsample.{rest}', 'view_transform.bev_out.{rest}',
         BEV_CONV, 'LSS BEV downsampling convs; ' + _BEV_NOTE),
)


@dataclass(frozen=True)
class BiasFold:
    """A conv bias right before a BatchNorm that only one side has.

    ``weight`` and ``bias`` are patterns of the conv on the side that has the
    bias (``has``); ``bn_reference`` / ``bn_fuller`` name the BatchNorm's
    ``running_mean`` on each side (``{n1}`` = ``{n}`` + 1). Converting away
    from ``has`` subtracts the bias from the running mean; converting towards
    it writes a zero bias. Both keep the output.
    """
    has: str
    weight: str
    bias: str
    bn_reference: str
    bn_fuller: str


FOLDS: Tuple[BiasFold, ...] = (
    # depth_lss.py: nn.Conv2d (bias) + BatchNorm2d; fuller: conv without bias
    BiasFold('reference', 'vtransform.dtransform.{n}.weight',
             'vtransform.dtransform.{n}.bias',
             'vtransform.dtransform.{n1}.running_mean',
             'view_transform.depth_encoder.{n1}.running_mean'),
    BiasFold('reference', 'vtransform.depthnet.{n}.weight',
             'vtransform.depthnet.{n}.bias',
             'vtransform.depthnet.{n1}.running_mean',
             'view_transform.depth_net.{n1}.running_mean'),
    # SeparateHead ConvModules: bias='auto' (none) in the reference; fuller
    # builds its SeparateHead with bias=True
    BiasFold('fuller', 'heads.det.pred_heads.{n}.{reg}.{m}.conv.weight',
             'heads.det.pred_heads.{n}.{reg}.{m}.conv.bias',
             'bbox_head.prediction_heads.{n}.{reg}.{m}.bn.running_mean',
             'heads.det.pred_heads.{n}.{reg}.{m}.bn.running_mean'),
    BiasFold('fuller', 'heads.det.pred_heads.{n}.cls.{m}.conv.weight',
             'heads.det.pred_heads.{n}.cls.{m}.conv.bias',
             'bbox_head.prediction_heads.{n}.heatmap.{m}.bn.running_mean',
             'heads.det.pred_heads.{n}.cls.{m}.bn.running_mean'),
)

_DECODER_REASON = (
    'TransFusion decoder layer of a different function: the reference '
    '(mmdet DetrTransformerDecoderLayer subclass) adds the positional '
    'embedding to the attention values and embeds raw grid positions with '
    'Conv1d-BatchNorm-ReLU-Conv1d; fuller\'s QueryDecoderLayer uses '
    'position-free values and Linear-ReLU-Linear on [0, 1]-scaled positions. '
    'Left at its initialisation.')

#: reference key patterns deliberately not converted -> reason
UNMAPPED_REFERENCE: Tuple[Tuple[str, str], ...] = (
    ('bbox_head.decoder.{rest}', _DECODER_REASON),
    ('vtransform.{geom}', 'view-transform geometry constant (a frozen '
     'nn.Parameter in the reference); fuller derives it from the config as a '
     'non-persistent buffer (its frustum puts feature pixels at pixel '
     'centres, the reference spreads them over 0..W-1)'),
)
#: fuller key patterns with no reference counterpart -> reason
UNMAPPED_FULLER: Tuple[Tuple[str, str], ...] = (
    ('heads.det.decoder.{rest}', _DECODER_REASON),
    ('heads.seg.{rest}', 'BEV map segmentation head: the reference '
     'projects/BEVFusion detector has none'),
)


@lru_cache(maxsize=None)
def _compile(pattern: str) -> 're.Pattern':
    out, pos = '', 0
    for m in re.finditer(r'\{(\w+)\}', pattern):
        out += re.escape(pattern[pos:m.start()])
        out += f'(?P<{m.group(1)}>{_PLACEHOLDERS[m.group(1)]})'
        pos = m.end()
    return re.compile(out + re.escape(pattern[pos:]))


def _match(pattern: str, key: str) -> Optional[Dict[str, str]]:
    m = _compile(pattern).fullmatch(key)
    return None if m is None else m.groupdict()


def class_permutation(src_classes: Sequence[str],
                      dst_classes: Sequence[str]) -> List[int]:
    """``perm`` with ``dst[j] = src[perm[j]]``; the two lists must hold the
    same class names."""
    if sorted(src_classes) != sorted(dst_classes) or \
            len(set(src_classes)) != len(src_classes):
        raise ValueError(f'class lists differ: {list(src_classes)} vs '
                         f'{list(dst_classes)}; both sides must name the same '
                         'classes (each once)')
    return [list(src_classes).index(c) for c in dst_classes]


def _apply(kind: str, key: str, value: Tensor, perm: List[int],
           to_fuller: bool) -> Tensor:
    """Tensor layout change of one mapped key (each is its own inverse
    except the class permutation and the Conv1d/Linear reshape)."""
    if kind in (BEV_CONV, CLASS_ROWS) and value.dim() == 4:
        value = value.transpose(2, 3)
    if kind == SPARSE_CONV and value.dim() == 5:
        value = value.permute(0, 3, 2, 1, 4)
    if kind == CLASS_ROWS:
        if value.shape[0] != len(perm):
            raise ValueError(f'{key}: {value.shape[0]} rows but '
                             f'{len(perm)} classes')
        value = value[perm]
    if kind == CLASS_COLUMNS:
        if to_fuller:
            if value.dim() != 3 or value.shape[2] != 1:
                raise ValueError(f'{key}: expected a Conv1d k=1 weight '
                                 f'(H, NC, 1), got {tuple(value.shape)}')
            value = value[:, perm, 0]
        else:
            value = value[:, perm].unsqueeze(-1)
        if value.shape[1] != len(perm):
            raise ValueError(f'{key}: {value.shape[1]} class columns but '
                             f'{len(perm)} classes')
    return value.contiguous()


def _check_source(state: Dict[str, Tensor], to_fuller: bool) -> None:
    if to_fuller and any(k.startswith(('encoders.', 'heads.object.'))
                         for k in state):
        raise ValueError(
            'this looks like a checkpoint of mit-han-lab/bevfusion '
            '(encoders.* / heads.object.* keys); only mmdet3d '
            'projects/BEVFusion checkpoints are supported')


def convert_state_dict(
        state: Dict[str, Tensor],
        to_fuller: bool = True,
        reference_classes: Sequence[str] = REFERENCE_CLASSES,
        fuller_classes: Optional[Sequence[str]] = None
) -> Tuple[Dict[str, Tensor], dict]:
    """Convert a state dict between the reference names and fuller's.

    Args:
        state: the source state dict.
        to_fuller: reference -> fuller (True) or fuller -> reference.
        reference_classes, fuller_classes: class orders of the two sides;
            ``fuller_classes`` defaults to mmdet3d's ``NuScenesDataset``
            order (the one fuller's nuScenes configs use).

    Returns:
        (converted state dict, report) where the report lists every source
        key either under ``mapped`` (source, destination, both shapes,
        transform) or ``unmapped`` (with the reason), plus ``added`` keys
        (zero conv biases the destination has and the source does not).
    """
    if fuller_classes is None:
        from mmdet3d.datasets import NuScenesDataset
        fuller_classes = NuScenesDataset.METAINFO['classes']
    _check_source(state, to_fuller)
    _check_spconv_layout(state)
    src_side, dst_side = (('reference', 'fuller') if to_fuller else
                          ('fuller', 'reference'))
    src_classes, dst_classes = ((reference_classes, fuller_classes)
                                if to_fuller else
                                (fuller_classes, reference_classes))
    perm = class_permutation(src_classes, dst_classes)
    out: Dict[str, Tensor] = OrderedDict()
    mapped, unmapped, folds = [], [], []
    skip_rules = UNMAPPED_REFERENCE if to_fuller else UNMAPPED_FULLER
    for key in sorted(state):
        value = state[key]
        fold = _fold_source(key, state, src_side)
        if fold is not None:
            folds.append((key, fold))
            continue
        hit = _find_rule(key, to_fuller)
        if hit is None:
            reason = next((r for p, r in skip_rules if _match(p, key)),
                          f'no rule for this key (no module of the {src_side}'
                          f' model that the {dst_side} model also has)')
            unmapped.append(dict(key=key, shape=list(value.shape),
                                 reason=reason))
            continue
        rule, fields = hit
        dst = (rule.fuller if to_fuller else rule.reference).format(**fields)
        if dst in out:
            raise ValueError(f'two source keys map to {dst}')
        out[dst] = _apply(rule.transform, key, value, perm, to_fuller)
        mapped.append(dict(src=key, dst=dst, src_shape=list(value.shape),
                           dst_shape=list(out[dst].shape),
                           transform=rule.transform, note=rule.note))
    for key, bn_dst in folds:
        if bn_dst not in out:
            raise ValueError(f'{key}: its BatchNorm {bn_dst} was not converted')
        out[bn_dst] = out[bn_dst] - state[key]
        mapped.append(dict(src=key, dst=bn_dst,
                           src_shape=list(state[key].shape),
                           dst_shape=list(out[bn_dst].shape),
                           transform=FOLD_BIAS,
                           note='conv bias before BatchNorm: subtracted from '
                           'its running_mean (same output)'))
    added = _zero_biases(out, dst_side)
    if not mapped:
        raise ValueError(f'no key of this state dict follows the {src_side} '
                         f'names (e.g. {sorted(state)[:3]})')
    report = dict(
        direction='mmdet3d_bevfusion->fuller' if to_fuller else
        'fuller->mmdet3d_bevfusion',
        classes=dict(source=list(src_classes), destination=list(dst_classes)),
        counts=dict(source_keys=len(state), mapped=len(mapped),
                    unmapped=len(unmapped), added=len(added),
                    output_keys=len(out)),
        mapped=mapped, unmapped=unmapped, added=added)
    return _with_spconv_metadata(out), report


def _fold_fields(pattern: str, key: str) -> Optional[Dict[str, str]]:
    fields = _match(pattern, key)
    if fields is not None and 'n' in fields:
        fields['n1'] = str(int(fields['n']) + 1)
    return fields


def _fold_source(key: str, state: Dict[str, Tensor],
                 src_side: str) -> Optional[str]:
    """Destination ``running_mean`` key when ``key`` is a conv bias that the
    destination lacks and a BatchNorm follows it in ``state``; else None."""
    for fold in FOLDS:
        if fold.has != src_side:
            continue
        fields = _fold_fields(fold.bias, key)
        if fields is None:
            continue
        bn_src, bn_dst = ((fold.bn_reference, fold.bn_fuller)
                          if src_side == 'reference' else
                          (fold.bn_fuller, fold.bn_reference))
        if bn_src.format(**fields) in state:
            return bn_dst.format(**fields)
    return None


def _zero_biases(out: Dict[str, Tensor], dst_side: str) -> List[dict]:
    """Write a zero bias for each destination conv that has one where the
    source conv (followed by a BatchNorm) has none."""
    added = []
    for fold in FOLDS:
        if fold.has != dst_side:
            continue
        bn_pattern = fold.bn_fuller if dst_side == 'fuller' \
            else fold.bn_reference
        for key in list(out):
            fields = _fold_fields(fold.weight, key)
            if fields is None:
                continue
            bias = fold.bias.format(**fields)
            if bias not in out and bn_pattern.format(**fields) in out:
                out[bias] = out[key].new_zeros(out[key].shape[0])
                added.append(dict(
                    key=bias, shape=list(out[bias].shape),
                    reason=f'the {dst_side} conv has a bias where the source '
                    'conv (before a BatchNorm) has none; written as zeros'))
    return added


def _sparse_modules(state: Dict[str, Tensor]) -> List[str]:
    return sorted({k.rsplit('.', 1)[0] for k, v in state.items()
                   if k.startswith('pts_middle_encoder.') and v.dim() == 5})


def _check_spconv_layout(state: Dict[str, Tensor]) -> None:
    """spconv 2 kernels are (C_out, k0, k1, k2, C_in); a state dict whose
    ``_metadata`` marks a sparse layer with another version holds spconv-1
    kernels (k0, k1, k2, C_in, C_out), which this converter does not read."""
    meta = getattr(state, '_metadata', None)
    if meta is None:
        return
    old = [m for m in _sparse_modules(state)
           if m in meta and meta[m].get('version') != 2]
    if old:
        raise ValueError(f'sparse conv layers {old[:3]} are saved in the '
                         'spconv 1.x layout; load the checkpoint in mmdet3d '
                         '(which converts it) and save it again first')


def _with_spconv_metadata(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Mark the sparse conv layers as spconv-2 layout (``version`` 2), as
    ``Module.state_dict`` does: mmdet3d's spconv layers permute kernels they
    load from a state dict without that mark (spconv-1 compatibility)."""
    out = OrderedDict(state)
    out._metadata = OrderedDict(
        (m, dict(version=2)) for m in _sparse_modules(state))
    return out


def _find_rule(key: str, to_fuller: bool):
    for rule in RULES:
        fields = _match(rule.reference if to_fuller else rule.fuller, key)
        if fields is not None:
            return rule, fields
    return None

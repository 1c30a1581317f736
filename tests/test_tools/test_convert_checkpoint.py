"""tools/convert_checkpoint.py and fuller.utils.checkpoint_loading.

The input is a state dict that follows mmdet3d's projects/BEVFusion module
names and shapes, written down below from the reference module definitions
(camera + LiDAR model of ``projects/BEVFusion/configs/``
``bevfusion_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-3d.py``),
then checked against the real mmdet3d modules where the reference reuses them.
"""
import importlib.util
import json
from collections import OrderedDict

import pytest
import torch
from fuller.utils.config_utils import load_config
from mmengine.registry import init_default_scope

import fuller  # noqa: F401
from fuller.utils.bevfusion_checkpoint import (REFERENCE_CLASSES,
                                               class_permutation,
                                               convert_state_dict)
from fuller.utils.checkpoint_loading import (CheckpointShapeMismatchError,
                                             load_checkpoint_partial,
                                             use_partial_loading)
from mmdet3d.registry import MODELS
from fuller.testing import REPO_ROOT, load_script


def _load_tool():
    return load_script(REPO_ROOT / 'tools' / 'convert_checkpoint.py', 'convert_checkpoint_tool')


convert_checkpoint = _load_tool()

FUSION_CFG = REPO_ROOT / 'configs' / 'bevfusion' / \
    'bevfusion_lidar-cam-swint_voxel0075_second_secfpn_8xb4-6e-from-lidar_nus-det-seg.py'
BN = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
NC, HIDDEN, HEAD_CONV = 10, 128, 64  # TransFusionHead config / SeparateHead default
DEPTH_BINS = 118  # dbound [1, 60, 0.5]
# fuller's class order: mmdet3d NuScenesDataset.METAINFO (hand-copied)
FULLER_CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle',
                  'bicycle', 'motorcycle', 'pedestrian', 'traffic_cone',
                  'barrier')


# tiny tensors: one intra-op thread is faster than several on a loaded CPU
pytestmark = pytest.mark.usefixtures('one_thread')


def bn(prefix, c):
    return {f'{prefix}.{n}': (() if n == 'num_batches_tracked' else (c, ))
            for n in BN}


def sparse_encoder_spec():
    """mmdet3d SparseEncoder (basicblock) as configured by the reference
    (BEVFusionSparseEncoder, sparse_encoder.py): spconv kernels are
    (C_out, k_x, k_y, k_z, C_in) in the reference's (x, y, z) index order."""
    s = {'conv_input.0.weight': (16, 3, 3, 3, 5), **bn('conv_input.1', 16)}
    stages = ((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128))
    c_in = 16
    for i, chans in enumerate(stages):
        for j, c in enumerate(chans):
            p = f'encoder_layers.encoder_layer{i + 1}.{j}'
            if j == len(chans) - 1 and i != len(stages) - 1:  # strided conv
                s.update({f'{p}.0.weight': (c, 3, 3, 3, c_in),
                          **bn(f'{p}.1', c)})
            else:  # SparseBasicBlock(c, c): conv1/bn1/conv2/bn2
                s.update({f'{p}.conv1.weight': (c, 3, 3, 3, c),
                          **bn(f'{p}.bn1', c),
                          f'{p}.conv2.weight': (c, 3, 3, 3, c),
                          **bn(f'{p}.bn2', c)})
            c_in = c
    # conv_out: kernel (1, 1, 3) in (x, y, z), stride (1, 1, 2)
    s.update({'conv_out.0.weight': (128, 1, 1, 3, 128), **bn('conv_out.1', 128)})
    return s


def second_spec():
    """mmdet3d SECOND(in 256, out [128, 256], layer_nums [5, 5]): per block
    a strided conv then 5 convs, each conv-BN-ReLU (indices 3k, 3k+1)."""
    s, c_in = {}, 256
    for i, c in enumerate((128, 256)):
        for k in range(6):
            s[f'blocks.{i}.{3 * k}.weight'] = (c, c_in if k == 0 else c, 3, 3)
            s.update(bn(f'blocks.{i}.{3 * k + 1}', c))
        c_in = c
    return s


def secondfpn_spec():
    """mmdet3d SECONDFPN: deblock 0 a 1x1 conv (use_conv_for_no_stride),
    deblock 1 a 2x2 stride-2 ConvTranspose2d (weight (C_in, C_out, 2, 2))."""
    return {'deblocks.0.0.weight': (256, 128, 1, 1), **bn('deblocks.0.1', 256),
            'deblocks.1.0.weight': (256, 256, 2, 2), **bn('deblocks.1.1', 256)}


def separate_head_spec(prefix):
    """mmdet3d SeparateHead(128, heads, Conv1d, BN1d): per branch a
    ConvModule (no bias: it has a norm) and a final Conv1d with bias."""
    heads = dict(center=2, height=1, dim=3, rot=2, vel=2, heatmap=NC)
    s = {}
    for name, k in heads.items():
        s.update({f'{prefix}.{name}.0.conv.weight': (HEAD_CONV, HIDDEN, 1),
                  **bn(f'{prefix}.{name}.0.bn', HEAD_CONV),
                  f'{prefix}.{name}.1.weight': (k, HEAD_CONV, 1),
                  f'{prefix}.{name}.1.bias': (k, )})
    return s


def decoder_layer_spec(prefix):
    """transformer.py TransformerDecoderLayer (mmdet DETR layer): mmcv
    MultiheadAttention (.attn = nn.MultiheadAttention), FFN, 3 LayerNorms,
    two PositionEncodingLearned (Conv1d-BN1d-ReLU-Conv1d)."""
    s = {}
    for attn in ('self_attn', 'cross_attn'):
        s.update({f'{prefix}.{attn}.attn.in_proj_weight': (3 * HIDDEN, HIDDEN),
                  f'{prefix}.{attn}.attn.in_proj_bias': (3 * HIDDEN, ),
                  f'{prefix}.{attn}.attn.out_proj.weight': (HIDDEN, HIDDEN),
                  f'{prefix}.{attn}.attn.out_proj.bias': (HIDDEN, )})
    s.update({f'{prefix}.ffn.layers.0.0.weight': (256, HIDDEN),
              f'{prefix}.ffn.layers.0.0.bias': (256, ),
              f'{prefix}.ffn.layers.1.weight': (HIDDEN, 256),
              f'{prefix}.ffn.layers.1.bias': (HIDDEN, )})
    for i in range(3):
        s.update({f'{prefix}.norms.{i}.weight': (HIDDEN, ),
                  f'{prefix}.norms.{i}.bias': (HIDDEN, )})
    for pe in ('self_posembed', 'cross_posembed'):
        p = f'{prefix}.{pe}.position_embedding_head'
        s.update({f'{p}.0.weight': (HIDDEN, 2, 1), f'{p}.0.bias': (HIDDEN, ),
                  **bn(f'{p}.1', HIDDEN), f'{p}.3.weight': (HIDDEN, HIDDEN, 1),
                  f'{p}.3.bias': (HIDDEN, )})
    return s


def head_spec():
    """transfusion_head.py TransFusionHead(in 512, hidden 128, 10 classes,
    one decoder layer)."""
    s = {'shared_conv.weight': (HIDDEN, 512, 3, 3), 'shared_conv.bias': (HIDDEN, ),
         'heatmap_head.0.conv.weight': (HIDDEN, HIDDEN, 3, 3),
         **bn('heatmap_head.0.bn', HIDDEN),
         'heatmap_head.1.weight': (NC, HIDDEN, 3, 3), 'heatmap_head.1.bias': (NC, ),
         'class_encoding.weight': (HIDDEN, NC, 1), 'class_encoding.bias': (HIDDEN, )}
    s.update(decoder_layer_spec('decoder.0'))
    s.update(separate_head_spec('prediction_heads.0'))
    return s


def vtransform_spec():
    """depth_lss.py DepthLSSTransform(in 256, out 80, 256x704 -> 32x88,
    downsample 2): frozen geometry Parameters dx/bx/nx/frustum, dtransform and
    depthnet (convs with bias, then BN), downsample convs (no bias)."""
    s = {'dx': (3, ), 'bx': (3, ), 'nx': (3, ), 'frustum': (DEPTH_BINS, 32, 88, 3)}
    for i, (c_out, c_in, k) in zip((0, 3, 6), ((8, 1, 1), (32, 8, 5), (64, 32, 5))):
        s.update({f'dtransform.{i}.weight': (c_out, c_in, k, k),
                  f'dtransform.{i}.bias': (c_out, ), **bn(f'dtransform.{i + 1}', c_out)})
    for i, (c_out, c_in) in zip((0, 3), ((256, 256 + 64), (256, 256))):
        s.update({f'depthnet.{i}.weight': (c_out, c_in, 3, 3),
                  f'depthnet.{i}.bias': (c_out, ), **bn(f'depthnet.{i + 1}', c_out)})
    s.update({'depthnet.6.weight': (DEPTH_BINS + 80, 256, 1, 1),
              'depthnet.6.bias': (DEPTH_BINS + 80, )})
    for i in (0, 3, 6):
        s.update({f'downsample.{i}.weight': (80, 80, 3, 3), **bn(f'downsample.{i + 1}', 80)})
    return s


def img_neck_spec():
    """bevfusion_necks.py GeneralizedLSSFPN([192, 384, 768], 256): lateral
    1x1 ConvModules on concat(level, upsampled), 3x3 fpn ConvModules."""
    s = {}
    for i, c_in in enumerate((192 + 256, 384 + 768)):
        s.update({f'lateral_convs.{i}.conv.weight': (256, c_in, 1, 1),
                  **bn(f'lateral_convs.{i}.bn', 256),
                  f'fpn_convs.{i}.conv.weight': (256, 256, 3, 3),
                  **bn(f'fpn_convs.{i}.bn', 256)})
    return s


def reference_spec(img_backbone_shapes):
    """Key -> shape of the reference BEVFusion camera + LiDAR state dict.
    HardSimpleVFE and the voxelisation have no parameters. The image backbone
    is mmdet's SwinTransformer on both sides, so its keys are taken from it."""
    parts = OrderedDict(
        pts_middle_encoder=sparse_encoder_spec(), pts_backbone=second_spec(),
        pts_neck=secondfpn_spec(), bbox_head=head_spec(),
        vtransform=vtransform_spec(), img_neck=img_neck_spec(),
        fusion_layer={'0.weight': (256, 80 + 256, 3, 3), **bn('1', 256)},
        img_backbone=img_backbone_shapes)
    return {f'{m}.{k}': tuple(v) for m, spec in parts.items()
            for k, v in spec.items()}


def random_state(spec, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in spec.items():
        if key.endswith('num_batches_tracked'):
            state[key] = torch.tensor(7)
        elif key.endswith('running_var'):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g)
    return state


@pytest.fixture(scope='module')
def fuller_model():
    """fuller's camera (Swin-T, DepthLSS) + LiDAR det + seg model at full
    size, built without initialising weights."""
    init_default_scope('mmdet3d')
    cfg = load_config(str(FUSION_CFG)).model
    cfg.view_transform.type = 'DepthLSSViewTransform'
    return MODELS.build(cfg)


@pytest.fixture(scope='module')
def reference(fuller_model):
    swin = {k: tuple(v.shape)
            for k, v in fuller_model.img_backbone.state_dict().items()}
    spec = reference_spec(swin)
    return spec, random_state(spec)


def test_hand_spec_matches_the_mmdet3d_modules_the_reference_reuses():
    """The written-down names/shapes agree with mmdet3d's SparseEncoder,
    SECOND, SECONDFPN and SeparateHead built from the reference config (the
    sparse kernels up to the reference's (x, y, z) kernel axis order)."""
    init_default_scope('mmdet3d')
    enc = MODELS.build(dict(
        type='SparseEncoder', in_channels=5, sparse_shape=[41, 1440, 1440],
        order=('conv', 'norm', 'act'), norm_cfg=dict(type='BN1d', eps=1e-3, momentum=0.01),
        encoder_channels=((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128)),
        encoder_paddings=((0, 0, 1), (0, 0, 1), (0, 0, (0, 1, 1)), (0, 0)),
        block_type='basicblock'))
    got = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    want = sparse_encoder_spec()
    want['conv_out.0.weight'] = (128, 3, 1, 1, 128)  # (z, y, x) kernel of mmdet3d
    assert got == want
    second = MODELS.build(dict(type='SECOND', in_channels=256, out_channels=[128, 256],
                               layer_nums=[5, 5], layer_strides=[1, 2],
                               norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01),
                               conv_cfg=dict(type='Conv2d', bias=False)))
    assert {k: tuple(v.shape) for k, v in second.state_dict().items()} == second_spec()
    fpn = MODELS.build(dict(type='SECONDFPN', in_channels=[128, 256], out_channels=[256, 256],
                            upsample_strides=[1, 2],
                            norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01),
                            upsample_cfg=dict(type='deconv', bias=False),
                            use_conv_for_no_stride=True))
    assert {k: tuple(v.shape) for k, v in fpn.state_dict().items()} == secondfpn_spec()
    sep = MODELS.build(dict(type='SeparateHead', in_channels=HIDDEN,
                            heads=dict(center=(2, 2), height=(1, 2), dim=(3, 2),
                                       rot=(2, 2), vel=(2, 2), heatmap=(NC, 2)),
                            conv_cfg=dict(type='Conv1d'), norm_cfg=dict(type='BN1d'),
                            bias='auto'))
    assert {f'p.{k}': tuple(v.shape) for k, v in sep.state_dict().items()} == \
        separate_head_spec('p')


def test_every_key_mapped_or_explained_and_loads_into_fuller(reference, fuller_model):
    spec, state = reference
    out, report = convert_state_dict(state)
    mapped = {m['src'] for m in report['mapped']}
    unmapped = {u['key']: u['reason'] for u in report['unmapped']}
    assert mapped | set(unmapped) == set(spec) and not mapped & set(unmapped)
    assert all(reason for reason in unmapped.values())
    # exactly the decoder layer and the view-transform geometry stay behind
    assert set(unmapped) == {k for k in spec if k.startswith('bbox_head.decoder.')} | \
        {f'vtransform.{g}' for g in ('dx', 'bx', 'nx', 'frustum')}
    # the destination shapes fit fuller's model: nothing unexpected, no
    # mismatch, and only fuller's own parts are missing
    with torch.no_grad():
        for value in fuller_model.state_dict().values():
            value.zero_()
    result = load_checkpoint_partial(fuller_model, dict(state_dict=out))
    assert result.unexpected == [] and result.shape_mismatch_allowed == {}
    assert {k.split('.')[0] + '.' + k.split('.')[1] for k in result.missing} == \
        {'heads.det', 'heads.seg'}
    assert all(k.startswith(('heads.det.decoder.', 'heads.seg.')) for k in result.missing)
    assert len(result.loaded) == len(out)
    own = fuller_model.state_dict()
    assert torch.equal(own['decoder.backbone.blocks.0.0.weight'],
                       state['pts_backbone.blocks.0.0.weight'].transpose(2, 3))


def test_layout_transforms_by_hand(reference):
    _, state = reference
    state = dict(state)
    k3 = torch.zeros(128, 512, 3, 3)
    k3[0, 0, 0, 2] = 1.0  # reference BEV kernel: row x = 0, column y = 2
    state['bbox_head.shared_conv.weight'] = k3
    sparse = torch.zeros(128, 1, 1, 3, 128)
    sparse[5, 0, 0, 2, 7] = 1.0  # reference kernel tap z = 2 (axes x, y, z)
    state['pts_middle_encoder.conv_out.0.weight'] = sparse
    state['bbox_head.heatmap_head.1.bias'] = torch.arange(10.)
    state['bbox_head.class_encoding.weight'] = torch.arange(10.).expand(128, 10)[..., None]
    bias = torch.full((8, ), 0.25)
    state['vtransform.dtransform.0.bias'] = bias
    out, _ = convert_state_dict(state, fuller_classes=FULLER_CLASSES)
    # BEV kernel: fuller's rows are y -> the tap moves to row 2, column 0
    assert out['heads.det.shared_conv.weight'][0, 0, 2, 0] == 1.0
    assert out['heads.det.shared_conv.weight'].sum() == 1.0
    # sparse kernel (z, y, x): tap z = 2 is now on the first kernel axis
    assert out['pts_middle_encoder.conv_out.0.weight'].shape == (128, 3, 1, 1, 128)
    assert out['pts_middle_encoder.conv_out.0.weight'][5, 2, 0, 0, 7] == 1.0
    # class permutation, hand-derived: fuller class j -> reference index
    expected = [0, 1, 4, 3, 2, 7, 6, 8, 9, 5]
    assert out['heads.det.heatmap_head.1.bias'].tolist() == expected
    assert out['heads.det.class_embedding.weight'].shape == (128, 10)
    assert out['heads.det.class_embedding.weight'][3].tolist() == expected
    assert class_permutation(REFERENCE_CLASSES, FULLER_CLASSES) == expected
    # conv bias folded into the next BatchNorm's running mean
    assert 'view_transform.depth_encoder.0.bias' not in out
    assert torch.allclose(out['view_transform.depth_encoder.1.running_mean'],
                          state['vtransform.dtransform.1.running_mean'] - 0.25)


def test_folded_bias_gives_the_same_output(reference):
    """conv(+bias) -> BN(eval) of the reference == conv -> BN' of fuller."""
    _, state = reference
    out, _ = convert_state_dict(state)
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))

    def run(w, b, bn_prefix, sd):
        y = torch.nn.functional.conv2d(x, w, b)
        return torch.nn.functional.batch_norm(
            y, sd[bn_prefix + 'running_mean'], sd[bn_prefix + 'running_var'],
            sd[bn_prefix + 'weight'], sd[bn_prefix + 'bias'], False, 0.0, 1e-5)

    ref = run(state['vtransform.dtransform.0.weight'], state['vtransform.dtransform.0.bias'],
              'vtransform.dtransform.1.', state)
    ours = run(out['view_transform.depth_encoder.0.weight'], None,
               'view_transform.depth_encoder.1.', out)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_round_trip_restores_the_reference(reference):
    spec, state = reference
    ours, _ = convert_state_dict(state)
    back, report = convert_state_dict(ours, to_fuller=False)
    # depth_lss.py conv biases followed by a BatchNorm (index + 1)
    folded_biases = {'vtransform.dtransform.0.bias', 'vtransform.dtransform.3.bias',
                     'vtransform.dtransform.6.bias', 'vtransform.depthnet.0.bias',
                     'vtransform.depthnet.3.bias'}
    folded_means = {'vtransform.dtransform.1.running_mean', 'vtransform.dtransform.4.running_mean',
                    'vtransform.dtransform.7.running_mean', 'vtransform.depthnet.1.running_mean',
                    'vtransform.depthnet.4.running_mean'}
    expected = set(spec) - {k for k in spec if k.startswith('bbox_head.decoder.')} - \
        {f'vtransform.{g}' for g in ('dx', 'bx', 'nx', 'frustum')}
    assert set(back) == expected
    for key in expected - folded_biases - folded_means:
        assert torch.equal(back[key], state[key]), key
    for key, mean in zip(sorted(folded_biases), sorted(folded_means)):
        # zero bias, running mean shifted by it: the same output
        assert not back[key].any()
        assert torch.allclose(back[mean], state[mean] - state[key])
    assert {a['key'] for a in report['added']} == folded_biases
    # fuller-only keys are reported, not dropped silently
    seg = {'heads.seg.classifier.weight': torch.zeros(6, 512, 1, 1)}
    _, report = convert_state_dict({**ours, **seg}, to_fuller=False)
    assert [u['key'] for u in report['unmapped']] == list(seg)
    assert 'segmentation head' in report['unmapped'][0]['reason']


def test_cli_writes_checkpoint_and_json_report(tmp_path, reference):
    _, state = reference
    lidar_only = {k: v for k, v in state.items()
                  if k.startswith(('pts_', 'bbox_head.'))}
    src, dst = tmp_path / 'ref.pth', tmp_path / 'out' / 'fuller.pth'
    torch.save(dict(state_dict=lidar_only, meta=dict(epoch=20)), src)
    convert_checkpoint.main([str(src), str(dst)])
    ckpt = torch.load(dst, weights_only=True)
    report = json.loads((tmp_path / 'out' / 'fuller.conversion.json').read_text())
    assert report['counts']['source_keys'] == len(lidar_only)
    assert report['counts']['mapped'] + report['counts']['unmapped'] == len(lidar_only)
    assert len(ckpt['state_dict']) == report['counts']['output_keys']
    assert ckpt['meta']['direction'] == 'mmdet3d_bevfusion->fuller'
    assert sorted(p.name for p in dst.parent.iterdir()) == \
        ['fuller.conversion.json', 'fuller.pth']  # no temp files left
    # and back to the reference names
    back = tmp_path / 'back.pth'
    convert_checkpoint.main([str(dst), str(back), '--reverse'])
    restored = torch.load(back, weights_only=True)['state_dict']
    for key, value in restored.items():
        assert torch.equal(value, lidar_only[key]), key


def test_foreign_checkpoints_are_refused(fuller_model, reference):
    _, state = reference
    with pytest.raises(ValueError, match='mit-han-lab'):
        convert_state_dict({'encoders.lidar.backbone.conv_input.0.weight': torch.zeros(1)})
    with pytest.raises(ValueError, match='convert_checkpoint'):
        load_checkpoint_partial(fuller_model, dict(state_dict=state))


def test_partial_loading_refuses_shape_mismatch_unless_allowed(fuller_model):
    own = fuller_model.state_dict()
    ckpt = {k: v.clone() for k, v in own.items() if k.startswith('decoder.')}
    ckpt['decoder.neck.deblocks.0.0.weight'] = torch.zeros(3, 3, 1, 1)
    ckpt['not.in.model'] = torch.zeros(1)
    with pytest.raises(CheckpointShapeMismatchError) as err:
        load_checkpoint_partial(fuller_model, ckpt)
    msg = str(err.value)
    assert 'decoder.neck.deblocks.0.0.weight' in msg and '[3, 3, 1, 1]' in msg \
        and '[256, 128, 1, 1]' in msg
    report = load_checkpoint_partial(fuller_model, ckpt,
                                     allow_shape_mismatch=['decoder.neck.*'])
    assert report.shape_mismatch_allowed == {'decoder.neck.deblocks.0.0.weight': dict(
        checkpoint=[3, 3, 1, 1], model=[256, 128, 1, 1])}
    assert report.unexpected == ['not.in.model']
    assert len(report.loaded) == len(ckpt) - 2
    assert set(report.missing) == set(own) - set(ckpt)
    assert 'decoder.neck.deblocks.0.0.weight' not in report.loaded


def test_train_load_from_goes_through_the_reporting_hook():
    """tools/train.py --load-from replaces the fusion config's LiDAR
    checkpoint in its PartialCheckpointLoadHook (no second, silent load)."""
    spec = importlib.util.spec_from_file_location('train_tool', REPO_ROOT / 'tools' / 'train.py')
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    fuller_fusion = REPO_ROOT / 'configs' / 'fuller' / \
        'fuller_lidar-cam-swint_voxel0075_second_secfpn_8xb4-6e-from-lidar_nus-det-seg.py'
    cfg = train.build_config(train.parse_args(
        [str(fuller_fusion), '--load-from', 'x.pth', '--load-allow-shape-mismatch',
         'heads.det.*']))
    hooks = [h for h in cfg.custom_hooks if h['type'] == 'PartialCheckpointLoadHook']
    assert len(hooks) == 1 and hooks[0]['checkpoint'] == 'x.pth'
    assert hooks[0]['allow_shape_mismatch'] == ['heads.det.*'] and cfg.load_from is None
    # a config without the hook gets one
    cfg = load_config(str(REPO_ROOT / 'configs' / 'bevfusion' /
                          'bevfusion_lidar_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det.py'))
    hook = use_partial_loading(cfg, 'y.pth')
    assert hook == dict(type='PartialCheckpointLoadHook', checkpoint='y.pth')
    assert cfg.custom_hooks[-1] == hook


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(2, 3)
        self.b = torch.nn.Linear(3, 1)


def test_load_hook_reports_and_skips_resumed_runs(tmp_path):
    from unittest.mock import MagicMock

    from fuller.engine.hooks import PartialCheckpointLoadHook
    src = _Tiny()
    path = tmp_path / 'init.pth'
    torch.save(dict(state_dict={k: v for k, v in src.state_dict().items()
                                if k.startswith('a.')}), path)
    model = _Tiny()
    runner = MagicMock(model=model, iter=0, work_dir=str(tmp_path))
    PartialCheckpointLoadHook(checkpoint=str(path)).before_train(runner)
    assert torch.equal(model.a.weight, src.a.weight)
    report = json.loads((tmp_path / 'load_report.json').read_text())
    assert report['loaded'] == ['a.bias', 'a.weight']
    assert report['missing'] == ['b.bias', 'b.weight'] and report['unexpected'] == []
    assert 'loaded' in runner.logger.info.call_args_list[0].args[0]
    resumed = _Tiny()
    before = resumed.a.weight.clone()
    PartialCheckpointLoadHook(checkpoint=str(path)).before_train(
        MagicMock(model=resumed, iter=5, work_dir=str(tmp_path)))
    assert torch.equal(resumed.a.weight, before)


def test_missing_pretrained_file_is_named_before_training(tmp_path):
    from unittest.mock import MagicMock

    from mmengine.runner import BaseLoop

    from fuller.engine.hooks import InitCheckpointCheckHook
    model = _Tiny()
    model.b.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'swin.pth'))
    hook = InitCheckpointCheckHook(hint='Set swin_checkpoint.')
    training = MagicMock(model=model, _train_loop=MagicMock(spec=BaseLoop))
    with pytest.raises(FileNotFoundError, match=r'^b: init_cfg.checkpoint .*swin\.pth.*'
                       r'Set swin_checkpoint\.'):
        hook.before_run(training)
    hook.before_run(MagicMock(model=model, _train_loop=dict(type='EpochBasedTrainLoop')))
    (tmp_path / 'swin.pth').write_bytes(b'')
    hook.before_run(training)  # present: no error


def test_load_hook_runs_after_weight_init_in_a_real_runner(tmp_path):
    """In mmengine's Runner the hook loads after ``init_weights`` (which would
    otherwise overwrite the checkpoint) and before the first iteration."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__(init_cfg=dict(type='Constant', layer='Linear', val=0.0))
            self.linear = torch.nn.Linear(2, 1)
            self.seen = []

        def forward(self, inputs, data_samples=None, mode='tensor'):
            self.seen.append(self.linear.weight.detach().clone())
            x = inputs if isinstance(inputs, torch.Tensor) else torch.stack(list(inputs))
            return dict(loss=(self.linear(x) * 0).sum())

    path = tmp_path / 'init.pth'
    torch.save(dict(state_dict={'linear.weight': torch.full((1, 2), 3.0),
                                'linear.bias': torch.ones(1)}), path)
    model = Toy()
    runner = Runner(
        model=model, work_dir=str(tmp_path / 'work'), default_scope='mmdet3d',
        train_dataloader=dict(dataset=[torch.zeros(2)] * 2, batch_size=1,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(by_epoch=False, max_iters=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
        custom_hooks=[dict(type='PartialCheckpointLoadHook', checkpoint=str(path))])
    runner.train()
    assert torch.equal(model.seen[0], torch.full((1, 2), 3.0))
    report = json.loads((tmp_path / 'work' / 'load_report.json').read_text())
    assert report['loaded'] == ['linear.bias', 'linear.weight']

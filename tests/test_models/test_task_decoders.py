"""Per-task BEV decoders (MultiTaskBEVFusion ``task_decoders``) and the
capacity-axis configs of the multi-task study (configs/study)."""
import copy
from pathlib import Path

import pytest
import torch

import fuller  # noqa: F401
from fuller.testing import build_model_from_config, make_multitask_batch
from fuller.utils.config_utils import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]

STUDY = REPO_ROOT / 'configs' / 'study'
TINY = REPO_ROOT / 'configs' / 'bevfusion' / 'bevfusion_tiny_1xb2-24e_synthetic-nus.py'


def _model(cfg):
    return build_model_from_config(cfg, seed=0)


def _shapes(tree):
    """The tensor shapes of a nested dict / list output, in order."""
    if isinstance(tree, torch.Tensor):
        return [tuple(tree.shape)]
    items = tree.values() if isinstance(tree, dict) else tree
    return [s for item in items for s in _shapes(item)]


def _grad_norm(model, prefix):
    return sum(float(p.grad.norm()) for n, p in model.named_parameters()
               if n.startswith(prefix) and p.grad is not None)


@pytest.fixture(scope='module')
def taskdec_model():
    return _model(STUDY / 'bevfusion_tiny-taskdec_1xb2-24e_synthetic-nus.py')


def test_each_task_decodes_the_fused_map_with_its_own_weights(taskdec_model):
    model = taskdec_model
    shared = _model(TINY)
    assert model.decoder is None and sorted(model.task_decoders) == ['det', 'seg']
    # two copies of the shared decoder's architecture, with different weights
    dec = sum(p.numel() for p in shared.decoder.parameters())
    assert sum(p.numel() for p in model.task_decoders.parameters()) == 2 * dec
    w_det = next(model.task_decoders['det'].parameters())
    w_seg = next(model.task_decoders['seg'].parameters())
    assert w_det.shape == w_seg.shape and not torch.equal(w_det, w_seg)
    model.eval()
    shared.eval()
    with torch.no_grad():
        out = model(**make_multitask_batch(model, training=False), mode='tensor')
        ref = shared(**make_multitask_batch(shared, training=False), mode='tensor')
    # the last shared map is the fuser's output: 64 channels on the 90 x 90 grid
    assert out['shared_bev'].shape == (2, 64, 90, 90)
    for task in ('det', 'seg'):
        assert _shapes(out[task]) == _shapes(ref[task]), task


def test_training_step_reaches_both_decoders_and_the_fuser(taskdec_model):
    model = taskdec_model
    model.train()
    model.zero_grad()
    losses = model(**make_multitask_batch(model), mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    for prefix in ('task_decoders.det.', 'task_decoders.seg.', 'fuser.',
                   'img_backbone.', 'pts_middle_encoder.'):
        assert _grad_norm(model, prefix) > 0, prefix
    # the detection loss alone leaves the map decoder untouched
    model.zero_grad()
    losses = model(**make_multitask_batch(model), mode='loss')
    sum(v for k, v in losses.items() if k.startswith('det/loss')).backward()
    assert _grad_norm(model, 'task_decoders.det.') > 0
    assert _grad_norm(model, 'task_decoders.seg.') == 0


def test_calibration_acts_on_the_fused_map():
    model = _model(STUDY / 'fuller_tiny-summag-taskdec_1xb2-24e_synthetic-nus.py')
    assert model.grad_calibrator is not None
    model.train()
    seen = {}
    original = model.grad_calibrator.split_shared

    def spy(shared, tasks):
        seen['shape'] = tuple(shared.shape)
        return original(shared, tasks)

    model.grad_calibrator.split_shared = spy
    losses = model(**make_multitask_batch(model), mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert seen['shape'] == (2, 64, 90, 90)  # fuser output, not a decoder's
    assert _grad_norm(model, 'fuser.') > 0
    model.eval()
    with torch.no_grad():
        out = model(**make_multitask_batch(model, training=False), mode='predict')
    assert out[0].pred_masks_bev.shape == (6, 200, 200)
    assert len(out[0].pred_instances_3d.scores_3d) > 0


def test_only_the_map_head_gets_its_own_decoder():
    cfg = load_config(str(TINY))
    cfg.model.task_decoders = ['seg']
    model = _model(cfg)
    assert model.decoder is not None and list(model.task_decoders) == ['seg']
    assert model.task_decoder('det') is model.decoder
    losses = model(**make_multitask_batch(model), mode='loss')
    assert all(torch.isfinite(v).all() for v in losses.values())


def test_default_model_has_no_task_decoder():
    model = _model(TINY)
    assert len(model.task_decoders) == 0
    assert not any(k.startswith('task_decoders') for k in model.state_dict())


def test_task_decoder_errors_name_the_problem():
    cfg = load_config(str(TINY))
    bad = copy.deepcopy(cfg)
    bad.model.task_decoders = ['lanes']
    with pytest.raises(ValueError, match=r"task_decoders names tasks \['lanes'\]"):
        _model(bad)
    narrow = copy.deepcopy(cfg.model.decoder)
    narrow.neck.out_channels = [16, 16]
    bad = copy.deepcopy(cfg)
    bad.model.task_decoders = {'seg': narrow}
    with pytest.raises(ValueError, match=r'task_decoders\.seg and heads\.seg '
                       r'disagree on the task map channels: 32 vs 64'):
        _model(bad)


def _flat(node, prefix=''):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f'{prefix}{k}.'))
        return out
    return {prefix[:-1]: node}


@pytest.mark.parametrize('width', [128, 256])
def test_capacity_configs_change_only_the_trunk_width(width):
    pairs = [('bevfusion_tiny-w{}', TINY),
             ('bevfusion_tiny-w{}-det', REPO_ROOT / 'configs' / 'bevfusion' /
              'bevfusion_tiny-det_1xb2-24e_synthetic-nus.py'),
             ('bevfusion_tiny-w{}-seg', REPO_ROOT / 'configs' / 'bevfusion' /
              'bevfusion_tiny-seg_1xb2-24e_synthetic-nus.py'),
             ('fuller_tiny-w{}-summag', REPO_ROOT / 'configs' / 'fuller' /
              'fuller_tiny-summag_1xb2-24e_synthetic-nus.py')]
    half = width // 2
    expected = {
        'channels.shared_in': width, 'channels.shared': width,
        'model.fuser.out_channels': width,
        'model.decoder.backbone.in_channels': width,
        'model.decoder.backbone.out_channels': [half, width],
        'model.decoder.neck.in_channels': [half, width],
        'model.decoder.neck.out_channels': [half, half],
        'model.det_head.in_channels': width, 'model.seg_head.in_channels': width}
    for name, reference in pairs:
        wide = _flat(load_config(str(STUDY / (name.format(width) +
                                              '_1xb2-24e_synthetic-nus.py'))).to_dict())
        ref = _flat(load_config(str(reference)).to_dict())
        assert set(wide) == set(ref), name
        diff = {k: wide[k] for k in wide if wide[k] != ref[k]}
        assert diff == {k: v for k, v in expected.items() if k in ref}, name


@pytest.mark.parametrize('width', [128, 256])
def test_capacity_model_builds_with_the_wider_trunk(width):
    model = _model(STUDY / f'bevfusion_tiny-w{width}_1xb2-24e_synthetic-nus.py')
    model.eval()
    with torch.no_grad():
        out = model(**make_multitask_batch(model, training=False), mode='tensor')
    assert out['shared_bev'].shape == (2, width, 90, 90)

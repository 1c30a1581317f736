"""mmdet3d builds spconv layers with a CUDA-only algorithm; our switch makes
them run forward and backward on CPU and restores them for CUDA."""
import pytest
import torch
from spconv.core import ConvAlgo

from fuller.compat import set_spconv_algo
from mmdet3d.registry import MODELS

SPARSE_SHAPE = [41, 24, 40]  # Z, Y, X; non-square on purpose


def build_sparse_encoder():
    return MODELS.build(
        dict(
            type='SparseEncoder',
            in_channels=4,
            sparse_shape=SPARSE_SHAPE,
            order=('conv', 'norm', 'act'),
            base_channels=8,
            output_channels=16,
            encoder_channels=((8, ), (8, 16), (16, 16), (16, 16)),
            encoder_paddings=((0, ), (1, 1), (1, 1), ((1, 0, 0), 1, 1)),
            block_type='basicblock'))


def random_voxels(num=60, batch_size=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    coors = torch.stack([
        torch.randint(0, batch_size, (num, ), generator=g),
        torch.randint(0, SPARSE_SHAPE[0], (num, ), generator=g),
        torch.randint(0, SPARSE_SHAPE[1], (num, ), generator=g),
        torch.randint(0, SPARSE_SHAPE[2], (num, ), generator=g),
    ], 1)
    coors = torch.unique(coors, dim=0).int()
    feats = torch.randn(len(coors), 4, generator=g, requires_grad=True)
    return feats, coors


def sparse_algos(model):
    from spconv.pytorch.conv import SparseConvolution
    return {
        m.algo
        for m in model.modules() if isinstance(m, SparseConvolution)
    }


def test_default_build_is_cuda_only():
    """The trap exists: without the switch the CPU forward fails."""
    model = build_sparse_encoder()
    assert sparse_algos(model) == {ConvAlgo.MaskImplicitGemm}
    feats, coors = random_voxels()
    with pytest.raises(Exception):
        model(feats, coors, 2)


def test_switch_runs_forward_backward_on_cpu():
    model = build_sparse_encoder()
    n = set_spconv_algo(model, 'cpu')
    assert n == 13  # every sparse conv of this encoder
    assert sparse_algos(model) == {ConvAlgo.Native}
    assert set_spconv_algo(model, 'cpu') == 0  # idempotent
    feats, coors = random_voxels()
    out = model(feats, coors, 2)
    # (B, C * Z_out, Y / 8, X / 8): C=16 output channels, Z folded in
    assert out.shape[0] == 2 and out.shape[2:] == (3, 5)
    assert out.shape[1] % 16 == 0
    out.square().sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_switch_back_for_cuda_restores_original():
    model = build_sparse_encoder()
    set_spconv_algo(model, 'cpu')
    # switching "to cuda" only changes attributes, it needs no GPU
    assert set_spconv_algo(model, 'cuda') == 13
    assert sparse_algos(model) == {ConvAlgo.MaskImplicitGemm}


def test_switch_keeps_weights_and_outputs():
    """Weights are KRSC for every algorithm: switching must not touch them,
    and two Native passes agree with a state dict reloaded after switching."""
    torch.manual_seed(0)
    model = build_sparse_encoder().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    set_spconv_algo(model, 'cpu')
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    feats, coors = random_voxels()
    with torch.no_grad():
        ref = model(feats, coors, 2)
        set_spconv_algo(model, 'cuda')
        clone = build_sparse_encoder().eval()
        clone.load_state_dict(model.state_dict())
        set_spconv_algo(clone, 'cpu')
        out = clone(feats, coors, 2)
    torch.testing.assert_close(out, ref)


def test_hook_switches_runner_model():
    from unittest.mock import MagicMock

    from fuller.compat import SparseConvAlgoHook
    runner = MagicMock()
    runner.model = build_sparse_encoder()
    SparseConvAlgoHook().before_train(runner)
    assert sparse_algos(runner.model) == {ConvAlgo.Native}
    runner.logger.info.assert_called_once()

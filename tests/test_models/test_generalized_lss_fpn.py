"""GeneralizedLSSFPN: one fused map at the finest level's stride."""
import pytest
import torch
from mmdet3d.registry import MODELS

from fuller.models.necks.generalized_lss_fpn import GeneralizedLSSFPN

IN_CHANNELS = (6, 10, 12)


def levels(batch_cams=4, hw=(8, 22), seed=0):
    """C3, C4, C5 of a (64, 176) input: strides 8, 16, 32."""
    gen = torch.Generator().manual_seed(seed)
    (h, w) = hw
    return [torch.randn(batch_cams, c, -(-h // 2**i), -(-w // 2**i),
                        generator=gen) for i, c in enumerate(IN_CHANNELS)]


def build(**over):
    cfg = dict(type='GeneralizedLSSFPN', in_channels=IN_CHANNELS,
               out_channels=5)
    cfg.update(over)
    return MODELS.build(cfg)


def test_output_is_one_map_at_stride_8():
    neck = build()
    assert isinstance(neck, GeneralizedLSSFPN)
    outs = neck(levels())
    assert isinstance(outs, list) and len(outs) == 1
    assert outs[0].shape == (4, 5, 8, 22)  # 64 x 176 input / 8
    assert neck.out_stride == 8 and neck.output_shape() == (5, 8)


def test_odd_sizes_follow_the_finest_level():
    # A 56 x 100 input: C3 7 x 13, C4 4 x 7, C5 2 x 4.
    outs = build(upsample_mode='nearest')(levels(hw=(7, 13)))
    assert outs[0].shape == (4, 5, 7, 13)


@pytest.mark.parametrize('level', [1, 2])
def test_coarse_levels_reach_the_output(level):
    neck = build().eval()
    inputs = levels()
    base = neck(inputs)[0]
    inputs[level] = inputs[level] + 1.0
    assert not torch.allclose(neck(inputs)[0], base)


def test_gradients_reach_every_level():
    inputs = [x.requires_grad_(True) for x in levels()]
    build()(inputs)[0].square().sum().backward()
    assert all(x.grad.abs().sum() > 0 for x in inputs)


def test_bad_inputs_raise():
    neck = build()
    with pytest.raises(ValueError, match='levels'):
        neck(levels()[:2])
    wrong = levels()
    wrong[1] = wrong[1][:, :3]
    with pytest.raises(ValueError, match='channels'):
        neck(wrong)
    with pytest.raises(ValueError, match='in_strides'):
        build(in_strides=(8, 16))
    with pytest.raises(TypeError):
        build(num_outs=3)

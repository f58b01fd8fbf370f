"""The MiT speed switches: regular channels-last maps (values, strides, no copies) and equality
of the switched modules with mmseg's own, forward and backward, at batch 1 and 2."""
import copy

import pytest
import torch

import equiseg_mm  # noqa: F401  (compat fixes before mmseg.models)
from mmseg.models.backbones import MixVisionTransformer
from mmseg.models.utils import nlc_to_nchw

from equiseg_mm.models.backbones import MultiModalMiT
from equiseg_mm.models.necks import CMTBNeck
from equiseg_mm.models.utils import (nlc_to_nchw_cl, stack_channels_last, to_channels_last,
                                     use_channels_last, use_fast_attention)

TINY = dict(embed_dims=8, num_layers=[1, 2, 1, 1], num_heads=[1, 2, 2, 4])


def _close_grads(a, b):
    """Gradients equal up to float rounding (relative to their size)."""
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert (p.grad - q.grad).norm() <= 1e-4 * p.grad.norm() + 1e-7, name


def _loss(outs):
    gen = torch.Generator().manual_seed(1)
    return sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)


def _regular_cl(x):
    b, c, h, w = x.shape
    return x.stride() == (h * w * c, 1, w * c, c)


@pytest.mark.parametrize('batch', [1, 2])
def test_nlc_to_nchw_cl_values_strides_and_no_copy(batch):
    x = torch.randn(batch, 6 * 10, 5)
    out = nlc_to_nchw_cl(x, (6, 10))
    assert torch.equal(out, nlc_to_nchw(x, (6, 10)))
    assert _regular_cl(out)
    assert out.data_ptr() == x.data_ptr()  # a view


def test_mmseg_layout_is_irregular_at_batch_1():
    """The reason for the switch: mmseg's own conversion gives batch stride C at B = 1."""
    mmseg_map = nlc_to_nchw(torch.randn(1, 60, 5), (6, 10))
    assert mmseg_map.is_contiguous(memory_format=torch.channels_last)
    assert not _regular_cl(mmseg_map)
    fixed = to_channels_last(mmseg_map)
    assert _regular_cl(fixed) and torch.equal(fixed, mmseg_map)
    assert fixed.data_ptr() == mmseg_map.data_ptr()


def test_nlc_to_nchw_cl_copies_a_non_viewable_input_and_checks_sizes():
    x = torch.randn(2, 5, 60).transpose(1, 2)  # (2, 60, 5), channel stride 60
    out = nlc_to_nchw_cl(x, (6, 10))
    assert torch.equal(out, nlc_to_nchw(x, (6, 10))) and _regular_cl(out)
    with pytest.raises(ValueError, match='7 x 10'):
        nlc_to_nchw_cl(x, (7, 10))


def test_to_channels_last_copies_plain_maps_only_when_needed():
    x = torch.randn(2, 3, 4, 5)
    cl = to_channels_last(x)
    assert torch.equal(cl, x) and _regular_cl(cl) and cl.data_ptr() != x.data_ptr()
    assert to_channels_last(cl) is cl


@pytest.mark.parametrize('dim', [0, 1, 2, -4, -1])
def test_stack_channels_last_equals_torch_stack(dim):
    maps = [torch.randn(2, 3, 4, 5) for _ in range(3)]
    out = stack_channels_last(maps, dim)
    assert torch.equal(out, torch.stack(maps, dim))
    if dim % 5 < 2:  # channels innermost in memory
        assert out.stride()[2] == 1
    with pytest.raises(ValueError, match='dim'):
        stack_channels_last(maps, 5)


def test_use_channels_last_switches_exact_classes_once_and_keeps_state_dict():
    model = MixVisionTransformer(in_channels=3, **TINY)
    keys = list(model.state_dict())
    # 1 MiT + 5 layers x (attention + MixFFN)
    assert use_channels_last(model) == 11
    assert type(model).__name__ == '_ChannelsLastMixVisionTransformer'
    assert isinstance(model, MixVisionTransformer)
    assert use_channels_last(model) == 0  # already switched
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('weights_off', [False, True])
def test_switched_mit_equals_mmseg_forward_and_backward(batch, weights_off):
    torch.manual_seed(0)
    stock = MixVisionTransformer(in_channels=3, **TINY)
    fast = copy.deepcopy(stock)
    if weights_off:
        use_fast_attention(stock)
        use_fast_attention(fast)
    use_channels_last(fast)
    x = torch.randn(batch, 3, 64, 96)
    outs_stock, outs_fast = stock(x), fast(x)
    for a, b in zip(outs_stock, outs_fast):
        assert torch.allclose(a, b, atol=1e-5)
        assert _regular_cl(b)
    _loss(outs_stock).backward()
    _loss(outs_fast).backward()
    _close_grads(stock, fast)


@pytest.mark.parametrize('batch', [1, 2])
def test_backbone_fast_layout_equals_plain(batch):
    torch.manual_seed(0)
    plain = MultiModalMiT(modalities=['rgb', 'depth', 'event'], fast_layout=False, **TINY)
    fast = MultiModalMiT(modalities=['rgb', 'depth', 'event'], fast_layout=True, **TINY)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(batch, 9, 64, 96)
    for a, b in zip(plain.eval()(x), fast.eval()(x)):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5)
        assert b.stride()[2] == 1  # (B, N, H, W, C) memory
    with pytest.raises(ValueError, match='fast_layout'):
        MultiModalMiT(modalities=['rgb'], fast_layout='yes', **TINY)


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('aux_summary', ['per_primary', 'shared'])
def test_neck_fast_layout_equals_plain_forward_and_backward(batch, aux_summary):
    torch.manual_seed(0)
    kwargs = dict(in_channels=[8, 16, 16, 32], num_heads=[1, 2, 2, 4], with_ffn=True,
                  aux_summary=aux_summary)
    plain, fast = CMTBNeck(fast_layout=False, **kwargs), CMTBNeck(fast_layout=True, **kwargs)
    fast.load_state_dict(plain.state_dict())
    sizes = [(16, 24), (8, 12), (4, 6), (2, 3)]
    feats = [torch.randn(batch, 3, c, h, w) for c, (h, w) in zip([8, 16, 16, 32], sizes)]
    outs_plain, outs_fast = plain(feats), fast(feats)
    for a, b in zip(outs_plain, outs_fast):
        assert torch.allclose(a, b, atol=1e-5)
    for fused in outs_fast[:4]:
        assert _regular_cl(fused)  # what SegformerHead's 1 x 1 convolutions want
    _loss(outs_plain).backward()
    _loss(outs_fast).backward()
    _close_grads(plain, fast)


@pytest.mark.parametrize('with_cp', [False, True])
def test_backbone_and_neck_fast_layout_end_to_end_at_batch_1(with_cp):
    """The real path: channels-innermost backbone stacks at B = 1 into the neck (views and the
    as_strided stride fix), against both switched off, forward and backward."""
    torch.manual_seed(0)
    dims, heads = [8, 16, 16, 32], [1, 2, 2, 4]
    models = []
    for fast in (False, True):
        backbone = MultiModalMiT(modalities=['rgb', 'depth', 'event'], fast_layout=fast,
                                 with_cp=with_cp, **TINY)
        neck = CMTBNeck(in_channels=dims, num_heads=heads, fast_layout=fast, with_ffn=True,
                        aux_summary='shared', cross_sr_ratios=(16, 8, 4, 2))
        models.append(torch.nn.Sequential(backbone, neck))
    models[1].load_state_dict(models[0].state_dict())
    x = torch.randn(1, 9, 64, 96, requires_grad=True)
    outs = [m(x) for m in models]
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-5)
    _loss(outs[0]).backward()
    _loss(outs[1]).backward()
    _close_grads(models[0], models[1])


#: sha256 of ``inspect.getsource`` of mmseg 1.2.2's methods that fast_mit.py's switched classes
#: re-implement (their copies differ only in building maps with ``nlc_to_nchw_cl``).
MMSEG_FORWARD_SHA256 = {
    'EfficientMultiheadAttention':
        '479d503d62a3cc650239db00eaa8ab1df51fd5ea09d4efe996aea583c4975471',
    'MixFFN': 'cb39cd6dfb55f872d9a2cb9f3e946324437a8b6f6bc23ed7b377246c4534757c',
    'MixVisionTransformer': '920808d1537a724db6466d00eef24680bdd6c7f968f6b10d07f10b323da1e27b',
}


@pytest.mark.parametrize('name', sorted(MMSEG_FORWARD_SHA256))
def test_copied_mmseg_forwards_are_unchanged(name):
    import hashlib
    import inspect

    import mmseg
    from mmseg.models.backbones import mit
    source = inspect.getsource(getattr(mit, name).forward)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == MMSEG_FORWARD_SHA256[name], (
        f'mmseg {mmseg.__version__} changed {name}.forward (mmseg/models/backbones/mit.py). '
        f'equiseg_mm/models/utils/fast_mit.py switches {name} modules to '
        f'_ChannelsLast{name}, whose forward copies mmseg 1.2.2\'s: port the change into it '
        f'(keeping nlc_to_nchw_cl for the maps), check that the equality tests in this file '
        f'still pass, then record the new hash {digest} here')

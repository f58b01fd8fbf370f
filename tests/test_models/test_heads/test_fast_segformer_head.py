"""FastSegformerHead: mmseg's SegformerHead computed in another order -- same state dict, same
outputs and gradients (train and eval, every resize setting), fewer FLOPs."""
import pytest
import torch

import equiseg_mm  # noqa: F401  (compat fixes and registration before mmseg.models)
from mmseg.registry import MODELS

from equiseg_mm.models.heads import FastSegformerHead

DIMS = [8, 16, 24, 32]


def _cfg(**kwargs):
    cfg = dict(type='SegformerHead', in_channels=DIMS, in_index=[0, 1, 2, 3], channels=16,
               dropout_ratio=0.0, num_classes=5, norm_cfg=dict(type='BN', requires_grad=True),
               align_corners=False)
    cfg.update(kwargs)
    return cfg


def _pair(**kwargs):
    torch.manual_seed(0)
    stock = MODELS.build(_cfg(**kwargs))
    # non-trivial norm statistics and affine parameters, so that eval mode uses them
    for m in stock.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    fast = MODELS.build(_cfg(type='FastSegformerHead', **kwargs))
    fast.load_state_dict(stock.state_dict())  # strict: the same keys and shapes
    return stock, fast


def _inputs(sizes, batch=2, requires_grad=False):
    torch.manual_seed(1)
    return [torch.randn(batch, c, h, w, requires_grad=requires_grad)
            for c, (h, w) in zip(DIMS, sizes)]


KWARGS = [dict(), dict(align_corners=True), dict(interpolate_mode='nearest', align_corners=None),
          dict(interpolate_mode='bicubic'), dict(norm_cfg=None),
          dict(act_cfg=dict(type='GELU'), norm_cfg=dict(type='GN', num_groups=4)),
          dict(in_index=[3, 1, 2, 0], in_channels=[DIMS[i] for i in (3, 1, 2, 0)]),
          dict(in_index=[1, 2, 3], in_channels=DIMS[1:])]


# a 64 x 96 input at strides 4..32; and odd sizes whose ratios are not whole (padded inputs)
SIZES = [[(16, 24), (8, 12), (4, 6), (2, 3)], [(15, 21), (8, 11), (4, 6), (2, 3)]]


@pytest.mark.parametrize('sizes', SIZES)
@pytest.mark.parametrize('kwargs', KWARGS)
@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_same_outputs_as_segformer_head(sizes, kwargs, mode):
    stock, fast = _pair(**kwargs)
    getattr(stock, mode)()
    getattr(fast, mode)()
    feats = _inputs(sizes)
    expected, got = stock(feats), fast(feats)
    first = sizes[kwargs.get('in_index', [0])[0]]
    assert got.shape == expected.shape == (2, 5, *first)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    if mode == 'train':  # the same batch statistics (where there is a BatchNorm)
        for a, b in zip(stock.modules(), fast.modules()):
            if isinstance(a, torch.nn.BatchNorm2d):
                torch.testing.assert_close(b.running_mean, a.running_mean)
                torch.testing.assert_close(b.running_var, a.running_var)


@pytest.mark.parametrize('kwargs', KWARGS)
def test_same_gradients_as_segformer_head(kwargs):
    stock, fast = _pair(**kwargs)
    stock.train()
    fast.train()
    grads = []
    for head in (stock, fast):
        feats = _inputs(SIZES[1], requires_grad=True)
        head.zero_grad()
        (head(feats) * torch.linspace(-1, 1, 5).view(1, 5, 1, 1)).square().sum().backward()
        grads.append(([f.grad for f in feats],
                      {k: p.grad for k, p in head.named_parameters()}))
    (in_a, par_a), (in_b, par_b) = grads
    for a, b in zip(in_a, in_b):
        if a is None:  # a stage the head does not select
            assert b is None
            continue
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert par_a.keys() == par_b.keys()
    for k in par_a:
        torch.testing.assert_close(par_b[k], par_a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_fewer_flops_and_no_concatenation():
    """The fusion weights act at each stage's resolution, and the 4C-channel map is never
    built: FLOPs drop by about (1 - sum_i HW_i / (4 HW_0)) of the fusion's share."""
    from mmengine.analysis import FlopAnalyzer
    stock, fast = _pair()
    stock.eval()
    fast.eval()
    feats = _inputs(SIZES[0], batch=1)

    def conv_flops(head):
        analyzer = FlopAnalyzer(head, (feats, ))
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return analyzer.by_operator()['conv']

    c, hw0 = 16, 16 * 24
    saved = c * c * sum(hw0 - h * w for h, w in SIZES[0])  # 1x1 conv: C * C per pixel
    assert conv_flops(stock) - conv_flops(fast) == saved
    real_cat = torch.cat
    widths = {}
    for name, head in (('stock', stock), ('fast', fast)):
        seen = []

        def spy(tensors, *args, **kwargs):
            seen.append(sum(t.shape[1] for t in tensors))
            return real_cat(tensors, *args, **kwargs)
        torch.cat = spy
        try:
            head(feats)
        finally:
            torch.cat = real_cat
        widths[name] = seen
    assert widths == {'stock': [4 * c], 'fast': []}


def test_is_a_segformer_head():
    from mmseg.models.decode_heads import SegformerHead
    head = MODELS.build(_cfg(type='FastSegformerHead'))
    assert isinstance(head, FastSegformerHead) and isinstance(head, SegformerHead)


@pytest.mark.parametrize('where', ['fusion_conv', 'fusion_conv.conv', 'weight_norm'])
def test_wrapped_fusion_convolution_runs_mmsegs_computation(where):
    """Hooks on the fusion convolution (feature capture, hook-based weight norm) must see it
    run: the head then computes mmseg's way, and still equals mmseg's head."""
    stock, fast = _pair()
    stock.eval()
    fast.eval()
    feats = _inputs(SIZES[0])
    plain = fast(feats)
    seen = []
    if where == 'weight_norm':
        for head in (stock, fast):
            torch.nn.utils.weight_norm(head.fusion_conv.conv)
            head.fusion_conv.conv.weight_g.data.mul_(2)  # now differs from the raw weight
    else:
        module = fast.get_submodule(where)
        module.register_forward_hook(lambda m, args, out: seen.append(out.shape[1]))
    assert not fast._reorder_is_exact()
    got = fast(feats)
    if where == 'weight_norm':
        assert not torch.allclose(got, plain, atol=1e-3)
    else:
        assert seen == [16]
    torch.testing.assert_close(got, stock(feats), rtol=1e-4, atol=1e-5)

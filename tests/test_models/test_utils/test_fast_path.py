"""The fast path computes what the plain path computes: outputs and gradients of whole models
built from the shipped configs, of the neck and of the head; its layout helpers; the branch
output reuse of the robustness test."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import equiseg_mm  # noqa: F401
from equiseg_mm.models import (CMTBNeck, MultiModalMiT, enable_fast_path,
                               reuse_branch_outputs)
from equiseg_mm.models.utils.fast_path import (_leave_one_out_max, nlc_to_nchw_cl,
                                               stack_channels_last, to_channels_last)
from equiseg_mm.utils import modality_subsets
from mmseg.models.utils import nlc_to_nchw
from mmseg.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
CONFIGS = ['equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py',
           'equiseg-paperneck_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py']


def _is_cl(x):
    b, c, h, w = x.shape
    return x.stride() == (h * w * c, 1, w * c, c)


@pytest.mark.parametrize('batch', [1, 2])
def test_nlc_to_nchw_cl_equals_mmseg_with_regular_strides(batch):
    x = torch.randn(batch, 6 * 10, 5)
    out = nlc_to_nchw_cl(x, (6, 10))
    assert torch.equal(out, nlc_to_nchw(x, (6, 10))) and _is_cl(out)
    assert out.data_ptr() == x.data_ptr()  # a view, no copy
    with pytest.raises(ValueError, match='7 x 10'):
        nlc_to_nchw_cl(x, (7, 10))
    plain = torch.randn(batch, 5, 6, 10)
    assert _is_cl(to_channels_last(plain)) and torch.equal(to_channels_last(plain), plain)


@pytest.mark.parametrize('dim', [0, 1])
def test_stack_channels_last_equals_torch_stack(dim):
    maps = [torch.randn(2, 3, 4, 5) for _ in range(3)]
    out = stack_channels_last(maps, dim)
    assert torch.equal(out, torch.stack(maps, dim))
    assert out.permute(0, 1, 3, 4, 2).is_contiguous()
    with pytest.raises(ValueError, match='dim'):
        stack_channels_last(maps, 2)


@pytest.mark.parametrize('n', [2, 3, 4, 5])
def test_leave_one_out_max_equals_loop(n):
    x = torch.randn(n, 2, 3, 4, 5)
    x[1] = x[0]  # ties
    got = _leave_one_out_max(x)
    for m in range(n):
        assert torch.equal(got[m], torch.stack([x[j] for j in range(n) if j != m]).max(0).values)


def _model_pair(name):
    """The config's model on the plain and on the fast path, with the same weights."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'equiseg', name)).model
    cfg.backbone.drop_path_rate = 0.  # no stochastic depth: one draw per path would differ
    cfg.decode_head.dropout_ratio = 0.
    cfg.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.auxiliary_head.seed = 0
    torch.manual_seed(0)
    plain = MODELS.build(dict(cfg, fast_path=False))
    plain.init_weights()
    fast = MODELS.build(dict(cfg, fast_path=True))
    assert plain.state_dict().keys() == fast.state_dict().keys()
    fast.load_state_dict(plain.state_dict())
    assert not any(type(m).__name__.startswith('_Fast') for m in plain.modules())
    return plain, fast


def _batch(model, batch, h=64, w=96):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(batch)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (12, h, w), dtype=torch.uint8, generator=gen))
        inputs[-1][3:6] = 0  # an absent modality
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, 25, (1, h, w), generator=gen))
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        samples.append(s)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), False)


@pytest.mark.parametrize('name', CONFIGS)
def test_shipped_models_fast_path_equals_plain_path(name):
    plain, fast = _model_pair(name)
    names = {type(m).__name__ for m in fast.modules()}
    assert {'_FastMultiModalMiT', '_FastMixVisionTransformer', '_FastCMTBNeck',
            '_FastSegformerHead', '_NoWeightsMultiheadAttention'} <= names
    grads = []
    for model in (plain, fast):
        model.train()
        data = _batch(model, 2)
        losses = model(**data, mode='loss')
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        grads[-1]['losses'] = torch.cat([v.reshape(-1) for k, v in sorted(losses.items())])
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        assert torch.allclose(grads[0][key], grads[1][key], rtol=1e-4, atol=1e-5), key
    for batch in (1, 2):
        outs = []
        for model in (plain, fast):
            model.eval()
            with torch.no_grad():
                outs.append(model(**_batch(model, batch), mode='tensor'))
        assert torch.allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('aux_summary', ['per_primary', 'shared'])
@pytest.mark.parametrize('n', [1, 2, 4])
def test_neck_fast_path_equals_plain_path(aux_summary, n):
    dims, heads = [8, 16, 16, 32], [1, 2, 2, 4]
    torch.manual_seed(0)
    plain = CMTBNeck(in_channels=dims, num_heads=heads, aux_summary=aux_summary,
                     self_attn=[False, True, True, True])
    plain.init_weights()
    with torch.no_grad():
        for (block, ) in plain.stages:
            block.score.weight.normal_()
    fast = CMTBNeck(in_channels=dims, num_heads=heads, aux_summary=aux_summary,
                    self_attn=[False, True, True, True])
    fast.load_state_dict(plain.state_dict())
    assert enable_fast_path(fast) > 0
    feats = [torch.randn(1, n, c, s, s + 3, requires_grad=True)
             for c, s in zip(dims, (16, 8, 4, 2))]
    results = []
    for neck in (plain, fast):
        outs = neck(feats)
        loss = sum((o * torch.linspace(-1, 1, o.numel()).view(o.shape)).sum() for o in outs)
        grads = torch.autograd.grad(loss, feats + list(neck.parameters()), allow_unused=True)
        results.append((outs, grads))
    for a, b in zip(results[0][0], results[1][0]):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        assert (a is None) == (b is None)  # with N = 1 the cross-modal layers are unused
        assert a is None or torch.allclose(a, b, atol=1e-4)


def test_head_fast_path_equals_plain_and_skips_other_fusions():
    cfg = dict(type='SegformerHead', in_channels=[8, 16, 16, 32], in_index=[0, 1, 2, 3],
               channels=16, num_classes=5, norm_cfg=dict(type='BN', requires_grad=True),
               dropout_ratio=0.)
    plain, fast = MODELS.build(cfg), MODELS.build(cfg)
    fast.load_state_dict(plain.state_dict())
    assert enable_fast_path(fast) == 1
    feats = [torch.randn(2, c, s, s, requires_grad=True) for c, s in zip([8, 16, 16, 32],
                                                                         (16, 8, 4, 2))]
    grads = []
    for head in (plain, fast):
        out = head(feats)
        grads.append(torch.autograd.grad(out.square().sum(), feats + list(head.parameters())))
        grads[-1] = (out, ) + grads[-1]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    other = MODELS.build(dict(cfg, type='SegformerHead'))
    other.fusion_conv.conv = torch.nn.Conv2d(64, 16, 3, padding=1, bias=False)
    assert enable_fast_path(other) == 0  # not a 1x1 fusion: mmseg's computation stays


def test_segmentor_switch_is_a_bool():
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'equiseg', CONFIGS[0])).model
    with pytest.raises(ValueError, match='fast_path'):
        MODELS.build(dict(cfg, fast_path='yes'))


def test_reuse_branch_outputs_is_exact_and_runs_each_branch_twice():
    mods = ['rgb', 'depth', 'event']
    model = MultiModalMiT(modalities=mods, embed_dims=8, num_layers=[1, 1, 1, 1],
                          num_heads=[1, 1, 2, 2], skip_absent_branches=False).eval()
    branches = model.branches
    calls = []
    for n, branch in enumerate(model.branches):  # counts the branches' real runs
        branch.layers[0][0].register_forward_hook(lambda m, i, o, n=n: calls.append(n))
    x = torch.randn(2, 9, 64, 96)

    def subset_input(subset):
        y = x.clone()
        for i, m in enumerate(mods):
            if m not in subset:
                y[:, 3 * i:3 * i + 3] = 0
        return y

    subsets = modality_subsets(mods)
    with torch.no_grad():
        plain = [model(subset_input(s)) for s in subsets]
        calls.clear()
        with reuse_branch_outputs(model) as cache:
            reused = [model(subset_input(s)) for s in subsets]
    for a, b in zip(plain, reused):
        for fa, fb in zip(a, b):
            assert torch.equal(fa, fb)
    assert sorted(calls) == [0, 0, 1, 1, 2, 2]  # real input and zeros, once per branch
    assert cache.hits == len(subsets) * len(mods) - 6
    assert model.branches is branches and model.branch_cache is None  # the lent cache is gone
    calls.clear()
    with reuse_branch_outputs(model), torch.enable_grad():  # with gradients: nothing reused
        model(x)
        model(x)
    assert len(calls) == 6


def test_head_with_hooks_on_the_fusion_computes_in_mmsegs_order():
    """A forward hook on the fusion sees its input and output; an old-style weight norm
    recomputes the weight in a pre-hook: both need mmseg's computation, which the fast head
    then runs (same result as the plain head with the same hooks)."""
    cfg = dict(type='SegformerHead', in_channels=[8, 16], in_index=[0, 1], channels=8,
               num_classes=3, norm_cfg=dict(type='BN', requires_grad=True), dropout_ratio=0.)
    plain, fast = MODELS.build(cfg), MODELS.build(cfg)
    fast.load_state_dict(plain.state_dict())
    enable_fast_path(fast)
    seen = []
    for head in (plain, fast):
        torch.nn.utils.weight_norm(head.fusion_conv.conv)
        head.fusion_conv.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
        with torch.no_grad():
            head.fusion_conv.conv.weight_g.mul_(2.0)  # only the pre-hook makes this count
    feats = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)]
    plain.eval(), fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(feats), plain(feats), rtol=1e-4, atol=1e-5)
    assert seen == [16, 16]  # both ran the fusion on the 2 x 8-channel concatenation

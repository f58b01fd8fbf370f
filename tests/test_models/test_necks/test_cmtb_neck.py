"""CMTBNeck: output contract, equality with the paper's block written out per primary, the
shipped options (and what they change), gradients."""
import pytest
import torch
import torch.nn.functional as F

import equiseg_mm  # noqa: F401  (compat fixes before mmseg.models)
from mmseg.registry import MODELS

from equiseg_mm.models.necks import CMTBNeck
from equiseg_mm.models.necks.cmtb_neck import _box_mean

DIMS = [8, 16, 16, 32]
HEADS = [1, 2, 2, 4]
SIZES = [(16, 24), (8, 12), (4, 6), (2, 3)]  # a 64 x 96 input at strides 4..32


def _feats(n, batch=2, requires_grad=False):
    torch.manual_seed(0)
    return [torch.randn(batch, n, c, h, w, requires_grad=requires_grad)
            for c, (h, w) in zip(DIMS, SIZES)]


def _neck(**kwargs):
    return CMTBNeck(in_channels=DIMS, num_heads=HEADS, **kwargs)


def _square_pools_mix(block, x):
    """The mixer written with k x k pools, as the paper describes it."""
    normed = block.mix_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    pooled = sum(F.avg_pool2d(normed, k, stride=1, padding=k // 2, count_include_pad=False)
                 for k in block.pool_sizes)
    return x + block.mix_proj(pooled)


def _paper(neck, feats):
    """The paper's CMTB written out per primary, from the block's layers: SQH scores
    s * x + x, max over the auxiliaries, square-pool mixer, cross-attention, residual."""
    fused, stacks = [], []
    for (block, ), x in zip(neck.stages, feats):
        n = x.shape[1]
        per = []
        for m in range(n):
            out = block.self_attend(x[:, m])
            if n > 1:
                aux = [x[:, j] for j in range(n) if j != m]
                scored = [a * torch.sigmoid(block.score(a)) + a for a in aux]
                merged = torch.stack(scored).max(0).values
                out = out + block.cross_attn(out, _square_pools_mix(block, merged))
            per.append(out)
        fused.append(sum(per))
        stacks.append(torch.stack(per, 1))
    return fused + stacks


@pytest.mark.parametrize('n', [1, 2, 3, 4, 5])
def test_output_contract(n):
    feats = _feats(n)
    outs = MODELS.build(dict(type='CMTBNeck', in_channels=DIMS, num_heads=HEADS))(feats)
    assert len(outs) == 8
    for i, (c, (h, w)) in enumerate(zip(DIMS, SIZES)):
        assert outs[i].shape == (2, c, h, w)
        assert outs[4 + i].shape == (2, n, c, h, w)
        assert outs[i].shape[1] == c  # what SegformerHead(in_index=[0, 1, 2, 3]) expects
    assert all(torch.isfinite(o).all() for o in outs)


def test_fused_is_sum_over_primaries():
    outs = _neck()(_feats(3))
    for i in range(4):
        assert torch.allclose(outs[i], outs[4 + i].sum(1), atol=1e-5)


@pytest.mark.parametrize('n', [2, 3, 4])
def test_equals_the_paper_written_per_primary(n):
    neck = _neck()
    neck.init_weights()
    with torch.no_grad():  # a non-trivial SQH score (init makes it a constant 0.5)
        for (block, ) in neck.stages:
            block.score.weight.normal_()
    feats = _feats(n)
    feats = [torch.cat([x[:, :1], x[:, :1], x[:, 2:]], 1) for x in feats]  # ties in the max
    for got, want in zip(neck(feats), _paper(neck, feats)):
        assert torch.allclose(got, want, atol=1e-5)


def test_single_modality_is_self_attention_only():
    neck = _neck(num_modalities=1)
    assert not any(hasattr(blocks[0], 'cross_attn') for blocks in neck.stages)
    feats = _feats(1)
    outs = neck(feats)
    for i, (blocks, x) in enumerate(zip(neck.stages, feats)):
        assert torch.allclose(outs[i], blocks[0].self_attend(x[:, 0]), atol=1e-6)
    shared = _neck()  # N=1 through a neck built for any N gives the same, cross parts unused
    shared.load_state_dict(neck.state_dict(), strict=False)
    for a, b in zip(shared(feats), outs):
        assert torch.allclose(a, b, atol=1e-6)


def test_zeroed_modalities_are_finite():
    feats = _feats(3)
    feats = [torch.cat([x[:, :1], torch.zeros_like(x[:, 1:])], 1) for x in feats]
    for out in _neck()(feats):
        assert torch.isfinite(out).all()


def test_init_weights_starts_sqh_scores_at_one_half():
    neck = _neck()
    neck.init_weights()
    block = neck.stages[0][0]
    x = torch.randn(2, 8, 16, 24)
    assert torch.allclose(block.select(x), 1.5 * x)


@pytest.mark.parametrize('kwargs, match', [
    (dict(in_channels=[8, 16], num_heads=HEADS), 'one entry per stage'),
    (dict(in_channels=DIMS, num_heads=[3, 2, 2, 4]), 'num_heads'),
    (dict(in_channels=DIMS, num_heads=HEADS, sr_ratios=[8, 4, 2, 0]), 'sr_ratios'),
    (dict(in_channels=DIMS, num_heads=HEADS, pool_sizes=(3, 4)), 'pool_sizes'),
    (dict(in_channels=DIMS, num_heads=HEADS, pool_sizes=()), 'pool_sizes'),
    (dict(in_channels=DIMS, num_heads=HEADS, num_modalities=0), 'num_modalities'),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CMTBNeck(**kwargs)


def test_bad_inputs_raise():
    neck = _neck(num_modalities=2)
    with pytest.raises(ValueError, match='num_modalities=2'):
        neck(_feats(3))
    with pytest.raises(ValueError, match='4 stages'):
        neck(_feats(2)[:3])
    feats = _feats(2)
    feats[1] = feats[1][:, :, :8]
    with pytest.raises(ValueError, match='stage 1'):
        neck(feats)


@pytest.mark.parametrize('k', [1, 3, 7, 11])
@pytest.mark.parametrize('hw', [(16, 24), (2, 3), (5, 1)])
def test_separable_box_mean_equals_square_pool(k, hw):
    x = torch.randn(3, 4, *hw)
    want = F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)
    assert torch.allclose(_box_mean(x, k), want, atol=1e-6)


def test_mixer_equals_square_pools():
    neck = _neck()
    neck.init_weights()
    for blocks, c in zip(neck.stages, DIMS):
        x = torch.randn(2, c, 9, 13)
        assert torch.allclose(blocks[0].mix(x), _square_pools_mix(blocks[0], x), atol=1e-5)


# ---- options that change results: the paper's behaviour stays the default ----

def _shared_naive(neck, feats):
    """aux_summary='shared': one merge over all N modalities per sample, attended by all."""
    fused = []
    for blocks, x in zip(neck.stages, feats):
        block, n = blocks[0], x.shape[1]
        selected = torch.stack([block.select(x[:, j]) for j in range(n)], 0)
        f_aux = block.mix(selected.max(0).values)
        per = []
        for m in range(n):
            out = block.self_attend(x[:, m])
            per.append(out + block.cross_attn(out, f_aux))
        fused.append(sum(per))
    return fused


def test_shared_aux_summary_equals_its_definition_and_differs_from_paper():
    paper = _neck()
    paper.init_weights()
    shared = _neck(aux_summary='shared')
    shared.load_state_dict(paper.state_dict())
    with torch.no_grad():
        for neck in (paper, shared):
            for blocks in neck.stages:
                blocks[0].score.weight.fill_(0.3)
    feats = _feats(3)
    got = shared(feats)
    for a, b in zip(got[:4], _shared_naive(shared, feats)):
        assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(got[0], paper(feats)[0], atol=1e-3)
    assert all(o.shape == p.shape for o, p in zip(got, paper(feats)))


def test_shared_aux_summary_gets_gradients():
    neck = _neck(aux_summary='shared', num_modalities=3)
    neck.init_weights()
    outs = neck(_feats(3))
    sum(o.square().mean() for o in outs).backward()
    assert all(p.grad is not None for p in neck.parameters())


def test_cross_sr_ratios_reduce_only_the_cross_attention_keys():
    neck = _neck(sr_ratios=[4, 2, 1, 1], cross_sr_ratios=[8, 4, 2, 1])
    block = neck.stages[0][0]
    assert block.self_attn.sr_ratio == 4 and block.cross_attn.sr.stride == (8, 8)
    assert neck.stages[3][0].cross_attn.sr is None
    outs = neck(_feats(2))
    assert [o.shape for o in outs] == [o.shape for o in _neck()(_feats(2))]
    default = _neck(sr_ratios=[4, 2, 1, 1])
    assert default.stages[0][0].cross_attn.sr.stride == (4, 4)


def test_eval_mode_produces_no_stacks():
    feats = _feats(2)
    neck = _neck().eval()
    with torch.no_grad():
        outs = neck(feats)
        # the same structure as in training: 4 fused maps, then 4 stack slots, here empty
        assert len(outs) == 8 and outs[4:] == (None, ) * 4
        assert all(o.shape[1] == c for o, c in zip(outs[:4], DIMS))
    assert all(o.dim() == 5 for o in _neck().train()(feats)[4:])


def test_eval_mode_keeps_no_per_primary_maps():
    # The per-primary maps (N x a fused map per stage) are freed inside the neck in eval mode,
    # not held by its output through the decode head.
    import gc
    import weakref
    neck = _neck().eval()
    made = []

    def keep_ref(module, args, out):  # the block's output: the per-primary maps
        made.extend(weakref.ref(o if o._base is None else o._base) for o in out)

    neck.stages[0][0].register_forward_hook(keep_ref)
    with torch.no_grad():
        outs = neck(_feats(3))
        gc.collect()
        assert len(made) == 3 and all(r() is None for r in made)
    del outs


@pytest.mark.parametrize('kwargs, match', [
    (dict(aux_summary='global'), 'aux_summary'),
    (dict(cross_sr_ratios=[8, 4, 2]), 'cross_sr_ratios'),
    (dict(cross_sr_ratios=[8, 4, 2, 0]), 'cross_sr_ratios'),
    (dict(self_attn=[False, True]), 'self_attn'),
    (dict(self_attn=[0, 1, 1, 1]), 'self_attn'),
    (dict(self_attn='none'), 'self_attn'),
])
def test_bad_option_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _neck(**kwargs)


@pytest.mark.parametrize('size', [(8, 40), (24, 24), (16, 32)])
def test_cross_reduction_pads_the_context_to_a_multiple_of_the_ratio(size):
    """cross_sr_ratios=16: an 8 x 40 context gives 1 x 3 keys, 24 x 24 gives 2 x 2 (every pixel
    reaches a key), 16 x 32 (divisible) is not padded."""
    torch.manual_seed(0)
    neck = _neck(cross_sr_ratios=(16, 8, 4, 2), aux_summary='shared').eval()
    attn = neck.stages[0][0].cross_attn
    h, w = size
    query, context = torch.randn(2, 8, h, w), torch.randn(2, 8, h, w)
    padded = F.pad(context, (0, -w % 16, 0, -h % 16))
    with torch.no_grad():
        got = attn(query, context)
        keys = attn.sr(padded)
        assert keys.shape[2:] == (-(-h // 16), -(-w // 16))
        kv = attn.kv(attn.norm_kv(keys.flatten(2).transpose(1, 2)))
        q = attn.q(attn.norm_q(query.flatten(2).transpose(1, 2)))
        k, v = kv.chunk(2, dim=-1)
        want = attn.proj(F.scaled_dot_product_attention(q, k, v))
    assert torch.allclose(got.flatten(2).transpose(1, 2), want, atol=1e-5)
    if h % 16 or w % 16:  # the last rows/columns matter (they would be dropped unpadded)
        changed = context.clone()
        changed[..., -1, -1] += 10
        with torch.no_grad():
            assert not torch.allclose(attn(query, changed), got)


def test_small_maps_run_with_coarse_cross_ratios():
    neck = _neck(cross_sr_ratios=(16, 8, 4, 2), aux_summary='shared').eval()
    small = [x[..., : max(x.shape[-2] // 2, 1), :] for x in _feats(3, batch=1)]  # 8 x 24, ...
    with torch.no_grad():
        assert all(torch.isfinite(o).all() for o in neck(small)[:4])  # eval: stacks None


@pytest.mark.parametrize('aux_summary', ['per_primary', 'shared'])
def test_self_attn_off_skips_exactly_the_self_attention(aux_summary):
    """Stages without self-attention build no self-attention layers and compute the block with
    f1' = f1; the other stages are unchanged (same weights, same outputs)."""
    full = _neck(aux_summary=aux_summary)
    full.init_weights()
    part = _neck(aux_summary=aux_summary, self_attn=[False, False, True, True])
    missing, unexpected = part.load_state_dict(full.state_dict(), strict=False)
    assert not missing
    assert unexpected and all(k.startswith(('stages.0.', 'stages.1.')) and
                              ('.self_attn.' in k or '.norm1.' in k) for k in unexpected)
    assert not any(hasattr(part.stages[i][0], 'self_attn') for i in (0, 1))
    feats = _feats(3)
    full.eval(), part.eval()
    got, ref = part(feats), full(feats)
    for i in (2, 3):
        assert torch.allclose(got[i], ref[i], atol=1e-5)
    for i in (0, 1):
        assert not torch.allclose(got[i], ref[i], atol=1e-3)
        # the definition: the same block with the identity in place of the self-attention
        block = full.stages[i][0]
        block.with_self_attn = False
        try:
            assert torch.allclose(got[i], full(feats)[i], atol=1e-5)
        finally:
            block.with_self_attn = True
    assert not any(b.with_self_attn for (b, ) in _neck(self_attn=False).stages)


def test_self_attn_off_gets_gradients_everywhere():
    neck = _neck(self_attn=[False, True, False, True], aux_summary='shared', num_modalities=3)
    neck.init_weights()
    outs = neck(_feats(3))
    sum(o.square().mean() for o in outs).backward()
    assert all(p.grad is not None for p in neck.parameters())

"""An absent modality's branch does not run at inference, and the outputs stay those of running
it on zeros: every modality subset of a tiny 4-modality model, on both paths; the cache follows
weight changes, stays bounded, and is off in training, with gradients and while tracing."""
import copy
import pickle

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.structures import PixelData

import equiseg_mm  # noqa: F401
from equiseg_mm.models import MultiModalMiT
from equiseg_mm.models.utils import BranchOutputCache
from equiseg_mm.utils import modality_subsets
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

MODS = ['rgb', 'depth', 'event', 'lidar']
CHANNELS = [3, 1, 3, 3]
DIMS, HEADS = [8, 8, 8, 8], [1, 1, 1, 1]


def _segmentor(fast_path: bool, skip: bool):
    cfg = ConfigDict(
        type='MultiModalEncoderDecoder', fast_path=fast_path,
        data_preprocessor=dict(type='MultiModalSegDataPreProcessor', modalities=MODS,
                               channels=CHANNELS),
        backbone=dict(type='MultiModalMiT', modalities=MODS, in_channels=CHANNELS,
                      embed_dims=8, num_layers=[1, 1, 1, 1], num_heads=HEADS,
                      skip_absent_branches=skip),
        neck=dict(type='CMTBNeck', in_channels=DIMS, num_heads=HEADS, num_modalities=4,
                  aux_summary='shared', self_attn=[False, False, True, True]),
        decode_head=dict(type='SegformerHead', in_channels=DIMS, in_index=[0, 1, 2, 3],
                         channels=16, num_classes=5, dropout_ratio=0.,
                         norm_cfg=dict(type='BN', requires_grad=True)),
        test_cfg=dict(mode='whole'))
    torch.manual_seed(0)
    return MODELS.build(cfg).eval()  # PyTorch's default initialisation


def _data(batch=2, h=40, w=56, seed=0):
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (sum(CHANNELS), h, w), dtype=torch.uint8,
                                    generator=gen))
        sample = SegDataSample(gt_sem_seg=PixelData(
            data=torch.randint(0, 5, (1, h, w), generator=gen)))
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _count_branch_calls(model):
    calls = []
    for n, branch in enumerate(model.backbone.branches):
        branch.register_forward_pre_hook(lambda m, args, n=n: calls.append(n))
    return calls


def _predict(model, data, missing):
    with model.data_preprocessor.protocol(missing=missing), torch.no_grad():
        return torch.stack([s.seg_logits.data for s in model.test_step(data)])


@pytest.mark.parametrize('fast_path', [False, True])
def test_every_subset_equals_running_the_branches_on_zeros(fast_path):
    """The inference path of ``inference_multimodal`` (``protocol(missing=...)`` then
    ``test_step``): bit-identical logits, and an absent branch runs once (its first zeros)."""
    skipping, running = _segmentor(fast_path, True), _segmentor(fast_path, False)
    running.load_state_dict(skipping.state_dict())
    calls = _count_branch_calls(skipping)
    data = _data()
    for round_ in range(2):
        for subset in modality_subsets(MODS):
            missing = [m for m in MODS if m not in subset]
            calls.clear()
            got = _predict(skipping, data, missing)
            assert torch.equal(got, _predict(running, data, missing)), (subset, round_)
            absent = {MODS.index(m) for m in missing}
            ran = set(calls)
            assert ran >= set(range(4)) - absent and len(calls) == len(ran)
            if round_ == 1:  # every zero output is known: an absent branch never runs
                assert not ran & absent, subset
    assert len(skipping.backbone.branch_cache) == 4  # one input shape per branch
    assert skipping.backbone.branch_cache.hits > 0


def test_tensor_mode_with_a_missing_modality_and_other_batch_sizes():
    """Each input shape (batch size included) has its own entry: bit-identical at every size."""
    skipping, running = _segmentor(True, True), _segmentor(True, False)
    running.load_state_dict(skipping.state_dict())
    calls = _count_branch_calls(skipping)
    for batch in (1, 3, 1, 3):
        x = torch.randn(batch, 10, 32, 48)
        x[:, 3:4] = 0  # depth absent in every sample
        calls.clear()
        with torch.no_grad():
            assert torch.equal(skipping(x, mode='tensor'), running(x, mode='tensor'))
    assert calls == [0, 2, 3]  # the second time at each size, depth does not run


def test_partly_absent_batch_and_training_and_gradients_run_every_branch():
    model = _segmentor(False, True)
    calls = _count_branch_calls(model)
    x = torch.randn(2, 10, 32, 32)
    x[0, 3:4] = 0  # depth absent in one sample only: the branch runs
    with torch.no_grad():
        model(x, mode='tensor')
        model(x, mode='tensor')
    assert calls == [0, 1, 2, 3] * 2
    x[:, 3:4] = 0
    calls.clear()
    model(x, mode='tensor')  # gradients enabled
    model.backbone.train()
    with torch.no_grad():
        model(x, mode='tensor')  # training mode
    assert calls == [0, 1, 2, 3] * 2 and len(model.backbone.branch_cache) == 0


def test_changed_weights_are_never_served_from_the_cache():
    skipping, running = _segmentor(False, True), _segmentor(False, False)
    running.load_state_dict(skipping.state_dict())
    x = torch.randn(1, 10, 32, 32)
    x[:, :3] = 0  # rgb absent

    def same():
        with torch.no_grad():
            return torch.equal(skipping(x, mode='tensor'), running(x, mode='tensor'))

    assert same() and same()
    # an optimizer step (in place, bumps the version counters)
    rgb = torch.randn(1, 3, 32, 32)
    for model in (skipping, running):
        opt = torch.optim.SGD(model.backbone.branches[0].parameters(), lr=0.1)
        with torch.enable_grad():
            model.backbone.branches[0](rgb)[-1].sum().backward()
        opt.step()
    assert same()
    # load_state_dict of other weights
    other = _segmentor(False, False)
    with torch.no_grad():
        for p in other.backbone.parameters():
            p.add_(0.05)
    skipping.load_state_dict(other.state_dict())
    running.load_state_dict(other.state_dict())
    assert same()
    # through .data the version counters do not move: train()/eval() or clear() forget
    for model in (skipping, running):
        model.backbone.branches[0].layers[0][2].bias.data.add_(1.0)
    assert not same()
    skipping.eval()
    assert same()
    for model in (skipping, running):
        model.backbone.branches[0].layers[0][2].bias.data.add_(1.0)
    skipping.backbone.branch_cache.clear()
    assert same()


def test_cache_is_bounded_least_recently_used_first():
    backbone = MultiModalMiT(modalities=['a', 'b'], embed_dims=4, num_layers=[1] * 4,
                             num_heads=HEADS).eval()
    backbone.branch_cache = cache = BranchOutputCache(max_shapes=2)
    with torch.no_grad():
        for size in (32, 64, 96, 32):
            backbone(torch.zeros(1, 6, size, size))
    assert len(cache) == 4  # 2 branches x 2 shapes: 64 dropped, then 32 evicted and back
    assert [k[0] for k in cache._zero[0][1]] == [(1, 3, 96, 96), (1, 3, 32, 32)]
    with pytest.raises(ValueError, match='max_shapes'):
        BranchOutputCache(max_shapes=0)


def test_autocast_state_is_part_of_the_key():
    backbone = MultiModalMiT(modalities=['a', 'b'], embed_dims=4, num_layers=[1] * 4,
                             num_heads=HEADS, skip_absent_branches=True).eval()
    x = torch.zeros(1, 6, 32, 32)
    x[:, :3] = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        plain = backbone(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = backbone(x)
        again = backbone(x)
    assert len(backbone.branch_cache) == 2  # branch b: fp32 and bf16 outputs
    assert all(torch.equal(a, b) for a, b in zip(plain, again))
    assert not all(torch.equal(a.float(), b.float()) for a, b in zip(plain, low))


def test_tracing_never_bakes_a_cached_output_in():
    backbone = MultiModalMiT(modalities=['a', 'b'], embed_dims=4, num_layers=[1] * 4,
                             num_heads=HEADS).eval()
    zeros = torch.zeros(1, 6, 32, 32)
    with torch.no_grad():
        backbone(zeros)  # both zero outputs cached
        traced = torch.jit.trace(backbone, zeros, check_trace=False)
        x = torch.randn(1, 6, 32, 32)
        backbone.branch_cache = None
        for a, b in zip(traced(x), backbone(x)):
            assert torch.allclose(a, b, atol=1e-6)


def test_copies_and_pickles_start_empty_and_the_switch_is_checked():
    backbone = MultiModalMiT(modalities=['a', 'b'], embed_dims=4, num_layers=[1] * 4,
                             num_heads=HEADS).eval()
    with torch.no_grad():
        backbone(torch.zeros(1, 6, 32, 32))
    assert len(backbone.branch_cache) == 2
    assert len(copy.deepcopy(backbone).branch_cache) == 0
    assert len(pickle.loads(pickle.dumps(backbone)).branch_cache) == 0
    assert 'branch_cache' not in str(list(backbone.state_dict()))
    assert MultiModalMiT(modalities=['a'], skip_absent_branches=False).branch_cache is None
    with pytest.raises(ValueError, match='skip_absent_branches'):
        MultiModalMiT(modalities=['a'], skip_absent_branches='yes')

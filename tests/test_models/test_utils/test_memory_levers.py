"""The memory levers of training, on the CPU at a tiny size: activation checkpointing of the
branch stages and of the neck gives the plain path's losses and gradients (both paths, with
seeded stochastic depth and dropout); mixed precision (bf16 and fp16 autocast, and mmengine's
``AmpOptimWrapper`` as a config builds it) trains the whole model close to fp32."""
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData

import equiseg_mm  # noqa: F401
from equiseg_mm.models import CMTBNeck, MultiModalMiT
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

MODS = ['rgb', 'depth', 'lidar']
CHANNELS = [3, 1, 3]
DIMS, HEADS = [8, 16, 16, 16], [1, 2, 2, 2]


def _cfg(fast_path=False, backbone_cp=False, neck_cp=False, drop=0.1):
    return ConfigDict(
        type='MultiModalEncoderDecoder', fast_path=fast_path,
        data_preprocessor=dict(type='MultiModalSegDataPreProcessor', modalities=MODS,
                               channels=CHANNELS),
        backbone=dict(type='MultiModalMiT', modalities=MODS, in_channels=CHANNELS,
                      embed_dims=8, num_layers=[2, 1, 1, 1], num_heads=HEADS,
                      drop_path_rate=drop, with_cp=backbone_cp),
        neck=dict(type='CMTBNeck', in_channels=DIMS, num_heads=HEADS, num_modalities=3,
                  aux_summary='shared', self_attn=[False, True, True, True],
                  with_cp=neck_cp),
        decode_head=dict(type='SegformerHead', in_channels=DIMS, in_index=[0, 1, 2, 3],
                         channels=16, num_classes=5, dropout_ratio=drop,
                         norm_cfg=dict(type='BN', requires_grad=True)),
        auxiliary_head=dict(type='SGMHead', in_channels=DIMS, num_classes=5, seed=0),
        test_cfg=dict(mode='whole'))


def _build(**kwargs):
    torch.manual_seed(0)
    return MODELS.build(_cfg(**kwargs)).train()  # PyTorch's default initialisation


def _data(batch=2, h=32, w=48):
    gen = torch.Generator().manual_seed(1)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (sum(CHANNELS), h, w), dtype=torch.uint8,
                                    generator=gen))
        sample = SegDataSample(gt_sem_seg=PixelData(
            data=torch.randint(0, 5, (1, h, w), generator=gen)))
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _losses_and_grads(model, data=None):
    data = model.data_preprocessor(data or _data(), True)
    torch.manual_seed(123)  # the same stochastic-depth and dropout draws for every model
    model.auxiliary_head.load_rng_state_dict(  # and the same SGM pairing for every call
        dict(generator=torch.Generator().manual_seed(0).get_state()))
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if k.endswith('loss_ce') or k.endswith('loss_sgm'))
    model.zero_grad(set_to_none=True)
    total.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
             if p.grad is not None}
    return total.detach(), grads


def _count_calls(module):
    calls = []
    module.register_forward_pre_hook(lambda m, args: calls.append(1))
    return calls


@pytest.mark.parametrize('fast_path, backbone_cp, neck_cp', [
    (False, True, True), (True, True, True),
    (True, [True, False, False, True], [False, True, True, False])])
def test_activation_checkpointing_gives_the_plain_gradients(fast_path, backbone_cp, neck_cp):
    plain = _build(fast_path=fast_path)
    levers = _build(fast_path=fast_path, backbone_cp=backbone_cp, neck_cp=neck_cp)
    levers.load_state_dict(plain.state_dict())
    flags = [backbone_cp] * 4 if isinstance(backbone_cp, bool) else backbone_cp
    neck_flags = [neck_cp] * 4 if isinstance(neck_cp, bool) else neck_cp
    calls = {}
    for name, model in (('plain', plain), ('levers', levers)):
        # modules called inside the checkpointed computations
        calls[name] = ([_count_calls(model.backbone.branches[0].layers[i][1][0].ffn)
                        for i in range(4)],
                       [_count_calls(model.neck.stages[i][0].cross_attn) for i in range(4)])
    loss_a, grads_a = _losses_and_grads(plain)
    loss_b, grads_b = _losses_and_grads(levers)
    # a checkpointed layer runs again in the backward pass
    for part, part_flags in enumerate((flags, neck_flags)):
        runs = [len(a) for a in calls['plain'][part]]
        assert [len(b) for b in calls['levers'][part]] == \
            [2 * r if f else r for r, f in zip(runs, part_flags)]
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 50
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-7), name


def test_checkpointing_is_off_without_gradients_and_switches_are_checked():
    model = _build(fast_path=True, backbone_cp=True, neck_cp=True).eval()
    calls = _count_calls(model.neck.stages[0][0].cross_attn)
    with torch.no_grad():
        model(torch.randn(1, 7, 32, 32), mode='tensor')
    assert len(calls) == 1  # the fast neck runs every primary in one call
    with pytest.raises(ValueError, match='with_cp'):
        MultiModalMiT(modalities=MODS, in_channels=CHANNELS, with_cp=[True, False])
    with pytest.raises(ValueError, match='with_cp'):
        CMTBNeck(in_channels=DIMS, num_heads=HEADS, with_cp=[1, 0, 0, 0])


def _cosine(a, b):
    a = torch.cat([g.flatten().double() for g in a.values()])
    b = torch.cat([g.flatten().double() for g in b.values()])
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize('fast_path, dtype', [
    (False, torch.bfloat16), (True, torch.bfloat16), (True, torch.float16)])
def test_autocast_trains_the_whole_model_close_to_fp32(fast_path, dtype):
    """bf16 and fp16 autocast on the CPU (torch runs both there): finite, close losses, every
    parameter's gradient, and gradients pointing where fp32's do."""
    model = _build(fast_path=fast_path, drop=0.)
    loss32, grads32 = _losses_and_grads(model)
    linear_dtypes = set()
    model.decode_head.convs[0].conv.register_forward_hook(
        lambda m, i, o: linear_dtypes.add(o.dtype))
    with torch.autocast('cpu', dtype=dtype):
        loss16, grads16 = _losses_and_grads(model)
    assert linear_dtypes == {dtype}  # autocast reached the model
    assert torch.isfinite(loss16) and loss16.dtype == torch.float32
    assert abs(float(loss16) - float(loss32)) < 0.02 * float(loss32)
    assert grads16.keys() == grads32.keys()
    assert all(torch.isfinite(g).all() for g in grads16.values())
    assert _cosine(grads16, grads32) > 0.99


def test_amp_optim_wrapper_of_a_config_trains_on_the_cpu(monkeypatch):
    """``optim_wrapper=dict(type='AmpOptimWrapper', dtype='bfloat16')``, mmengine's switch, as
    the runner builds it. mmengine refuses to build it without a GPU; with that check lifted,
    its loss scaler is off (a CUDA scaler without CUDA) and its autocast is the CPU's."""
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp
    monkeypatch.setattr(amp, 'is_cuda_available', lambda: True)
    model = _build(fast_path=True, backbone_cp=True, neck_cp=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrapper = build_optim_wrapper(model, dict(
        type='AmpOptimWrapper', dtype='bfloat16',
        optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01)))
    seen = set()
    model.neck.stages[1][0].cross_attn.q.register_forward_hook(
        lambda m, i, o: seen.add(o.dtype))
    log_vars = model.train_step(_data(), wrapper)
    assert seen == {torch.bfloat16}
    assert all(torch.isfinite(v).all() for v in log_vars.values())
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)  # the step reached every parameter

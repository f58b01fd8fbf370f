"""MultiModalMiT: shapes, equal branches, fast attention, other branches, pretrained loading."""
import importlib.util
import os.path as osp
from collections import OrderedDict

import pytest
import torch

import equiseg_mm  # noqa: F401  (compat fixes before mmseg.models)
from mmseg.models.backbones import MixVisionTransformer
from mmseg.registry import MODELS

from equiseg_mm.models.backbones import MultiModalMiT, convert_segformer_mit_keys

TINY = dict(embed_dims=8, num_layers=[1, 1, 1, 1], num_heads=[1, 2, 2, 4])
TINY_DIMS = [8, 16, 16, 32]
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def _tiny_mit(in_channels=3, **kwargs):
    cfg = dict(TINY, **kwargs)
    return MixVisionTransformer(in_channels=in_channels, **cfg)


@pytest.mark.parametrize('num_modalities', [1, 2, 3, 4, 5])
def test_output_shapes_non_square(num_modalities):
    names = [f'm{i}' for i in range(num_modalities)]
    channels = [3, 1, 2, 3, 1][:num_modalities]
    model = MultiModalMiT(modalities=names, in_channels=channels, **TINY)
    outs = model(torch.randn(2, sum(channels), 64, 96))
    assert len(outs) == 4
    for out, c, s in zip(outs, TINY_DIMS, [4, 8, 16, 32]):
        assert out.shape == (2, num_modalities, c, 64 // s, 96 // s)
    assert model.num_modalities == num_modalities


def test_branches_are_equal_and_independent():
    model = MultiModalMiT(modalities=['rgb', 'depth'], in_channels=3, **TINY)
    assert len(model.branches) == 2
    shapes = [[p.shape for p in b.parameters()] for b in model.branches]
    assert shapes[0] == shapes[1]  # no branch is privileged
    x = torch.randn(1, 6, 64, 96)
    base = model(x)
    x2 = x.clone()
    x2[:, 3:] = torch.randn(1, 3, 64, 96)  # change the depth channels only
    changed = model(x2)
    for a, b in zip(base, changed):
        assert torch.equal(a[:, 0], b[:, 0])
        assert not torch.allclose(a[:, 1], b[:, 1])


def test_split_follows_modality_order():
    model = MultiModalMiT(modalities=['a', 'b'], in_channels=[1, 3], **TINY).eval()
    x = torch.randn(1, 4, 64, 96)
    out = model(x)[0]
    direct = model.branches[1](x[:, 1:4])[0]
    assert torch.allclose(out[:, 1], direct)


def test_zeroed_modalities_are_finite():
    model = MultiModalMiT(modalities=['rgb', 'depth', 'event'], **TINY)
    x = torch.randn(2, 9, 64, 96)
    x[:, 3:9] = 0
    for out in model(x):
        assert torch.isfinite(out).all()
    for out in model(torch.zeros(2, 9, 64, 96)):
        assert torch.isfinite(out).all()


def test_resnet_branch_builds_and_runs():
    model = MODELS.build(dict(
        type='MultiModalMiT', modalities=['rgb', 'depth'], in_channels=[3, 1],
        branch=dict(type='ResNetV1c', depth=18, in_channels=99, norm_cfg=dict(type='BN'))))
    assert model.branches[0].stem[0].in_channels == 3
    assert model.branches[1].stem[0].in_channels == 1  # in_channels overridden per modality
    outs = model(torch.randn(2, 4, 64, 96))
    for out, c, s in zip(outs, [64, 128, 256, 512], [4, 8, 16, 32]):
        assert out.shape == (2, 2, c, 64 // s, 96 // s)


def test_wrong_input_channels_raise():
    model = MultiModalMiT(modalities=['rgb', 'depth'], in_channels=[3, 1], **TINY)
    with pytest.raises(ValueError, match='rgb'):
        model(torch.randn(1, 6, 64, 96))


@pytest.mark.parametrize('kwargs, match', [
    (dict(modalities=[]), 'modalities'),
    (dict(modalities='rgb'), 'modalities'),
    (dict(modalities=['rgb', 'rgb']), 'unique'),
    (dict(modalities=['rgb', 'depth'], in_channels=[3]), 'channel'),
    (dict(modalities=['rgb'], in_channels=[0]), 'channels'),
    (dict(modalities=['rgb'], in_channels='3'), 'in_channels'),
    (dict(modalities=['rgb'], branch='ResNetV1c'), 'branch'),
    (dict(modalities=['rgb'], branch=dict(depth=18)), 'branch'),
    (dict(modalities=['rgb'], num_layers=[1, 1]), 'num_stages'),
    (dict(modalities=['rgb'], out_indices=(0, 4)), 'out_indices'),
    (dict(modalities=['rgb'], init_cfg=[dict(type='Pretrained', checkpoint='x.pth')]),
     'init_cfg'),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiModalMiT(**kwargs)


def _random_mit_checkpoint():
    torch.manual_seed(1)
    mit = _tiny_mit()
    mit.init_weights()
    with torch.no_grad():  # make every tensor distinctive (norms start as ones/zeros)
        for p in mit.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return mit.state_dict()


@pytest.mark.parametrize('wrap', ['plain', 'state_dict_backbone'])
def test_pretrained_loads_into_every_branch(tmp_path, wrap):
    state = _random_mit_checkpoint()
    if wrap == 'plain':
        ckpt = state
    else:  # an mmseg segmentor checkpoint: state_dict wrapper, backbone. prefix, other parts
        sd = OrderedDict(('backbone.' + k, v) for k, v in state.items())
        sd['decode_head.conv_seg.weight'] = torch.randn(4, 8, 1, 1)
        ckpt = dict(meta=dict(), state_dict=sd)
    path = str(tmp_path / 'mit.pth')
    torch.save(ckpt, path)
    model = MultiModalMiT(modalities=['rgb', 'depth', 'event'], in_channels=[3, 1, 2],
                          init_cfg=dict(type='Pretrained', checkpoint=path), **TINY)
    model.init_weights()
    first = 'layers.0.0.projection.weight'
    for branch, channels in zip(model.branches, [3, 1, 2]):
        own = branch.state_dict()
        assert own.keys() == state.keys()
        for key, value in state.items():
            if key == first and channels != 3:
                expected = value.mean(1, keepdim=True).repeat(1, channels, 1, 1) * 3 / channels
                assert own[key].shape == (value.shape[0], channels, *value.shape[2:])
                assert torch.allclose(own[key], expected)
            else:
                assert torch.equal(own[key], value), key
    # The adapted kernel answers an all-equal input as the RGB kernel answers a gray image.
    gray = torch.randn(1, 1, 64, 96)
    rgb_out = model.branches[0].layers[0][0].projection(gray.repeat(1, 3, 1, 1))
    one_out = model.branches[1].layers[0][0].projection(gray)
    assert torch.allclose(rgb_out, one_out, atol=1e-5)


def test_pretrained_shape_mismatch_raises_naming_key_and_shapes(tmp_path):
    state = _tiny_mit(embed_dims=4).state_dict()  # wrong widths
    path = str(tmp_path / 'other.pth')
    torch.save(state, path)
    model = MultiModalMiT(modalities=['rgb'], init_cfg=dict(type='Pretrained', checkpoint=path),
                          **TINY)
    with pytest.raises(ValueError) as info:
        model.init_weights()
    msg = str(info.value)
    assert "branch 'rgb' (MixVisionTransformer" in msg
    # the first kernel differs in its output channels, not only its input channels
    assert 'size mismatch for layers.0.0.projection.weight: checkpoint (4, 3, 7, 7), ' \
        'branch (8, 3, 7, 7)' in msg
    assert 'more' in msg  # long lists are cut


def test_pretrained_missing_and_unexpected_keys_are_warned_by_name(tmp_path):
    state = _random_mit_checkpoint()
    state.pop('layers.3.2.bias')
    state['layers.9.extra'] = torch.zeros(1)
    path = str(tmp_path / 'other.pth')
    torch.save(state, path)
    model = MultiModalMiT(modalities=['rgb', 'depth'],
                          init_cfg=dict(type='Pretrained', checkpoint=path), **TINY)
    with pytest.warns(UserWarning) as record:
        model.init_weights()
    msg = ' '.join(str(w.message) for w in record)
    assert 'every branch' in msg
    assert 'missing keys in source state_dict: layers.3.2.bias' in msg
    assert 'unexpected key in source state_dict: layers.9.extra' in msg
    for branch in model.branches:  # the rest is loaded
        assert torch.equal(branch.state_dict()['layers.3.2.weight'], state['layers.3.2.weight'])


def _to_segformer_names(state):
    """Inverse of the conversion, written independently: mmseg MiT names -> official names."""
    out = OrderedDict()
    for key, v in state.items():
        parts = key.split('.')
        stage = int(parts[1]) + 1
        if parts[2] == '0':
            sub = 'proj' if parts[3] == 'projection' else 'norm'
            out[f'patch_embed{stage}.{sub}.{parts[-1]}'] = v
        elif parts[2] == '2':
            out[f'norm{stage}.{parts[-1]}'] = v
        else:
            prefix, rest = f'block{stage}.{parts[3]}.', '.'.join(parts[4:])
            if rest.startswith('attn.attn.in_proj_'):
                kind = rest.rsplit('_', 1)[1]
                c = v.shape[0] // 3
                out[f'{prefix}attn.q.{kind}'] = v[:c]
                out[f'{prefix}attn.kv.{kind}'] = v[c:]
            elif rest.startswith('attn.attn.out_proj.'):
                out[f'{prefix}attn.proj.{parts[-1]}'] = v
            elif rest.startswith('ffn.layers.'):
                name = {'0': 'mlp.fc1', '1': 'mlp.dwconv.dwconv', '4': 'mlp.fc2'}[parts[6]]
                if parts[6] in '04' and parts[-1] == 'weight':
                    v = v[:, :, 0, 0]
                out[f'{prefix}{name}.{parts[-1]}'] = v
            else:
                out[prefix + rest] = v
    out['head.weight'] = torch.randn(10, 32)
    out['head.bias'] = torch.randn(10)
    return out


def test_convert_segformer_mit_keys_round_trip():
    state = _random_mit_checkpoint()
    official = _to_segformer_names(state)
    assert 'block1.0.attn.q.weight' in official and 'patch_embed1.proj.weight' in official
    converted = convert_segformer_mit_keys(official)
    assert converted.keys() == state.keys()
    for key in state:
        assert torch.equal(converted[key], state[key]), key
    mit = _tiny_mit()
    mit.load_state_dict(converted, strict=True)


def test_convert_agrees_with_mmseg_shipped_converter():
    path = osp.join(osp.dirname(importlib.util.find_spec('mmseg').origin), '.mim', 'tools',
                    'model_converters', 'mit2mmseg.py')
    if not osp.isfile(path):
        pytest.skip('this mmseg install ships no mit2mmseg.py')
    spec = importlib.util.spec_from_file_location('_mit2mmseg', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    official = _to_segformer_names(_random_mit_checkpoint())
    ours, theirs = convert_segformer_mit_keys(official), module.convert_mit(official)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_official_checkpoint_loads_through_init_cfg_and_tool(tmp_path):
    state = _random_mit_checkpoint()
    src = str(tmp_path / 'mit_b0.pth')
    torch.save(dict(state_dict=_to_segformer_names(state)), src)
    model = MultiModalMiT(modalities=['rgb', 'lidar'],
                          init_cfg=dict(type='Pretrained', checkpoint=src), **TINY)
    model.init_weights()
    for branch in model.branches:
        assert all(torch.equal(branch.state_dict()[k], v) for k, v in state.items())

    spec = importlib.util.spec_from_file_location(
        '_convert_tool', osp.join(ROOT, 'tools', 'model_converters', 'convert_mit_checkpoint.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    dst = str(tmp_path / 'out' / 'mit_b0_mmseg.pth')
    tool.main([src, dst])
    converted = torch.load(dst, map_location='cpu')
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[k], v) for k, v in state.items())


def _grad_of_random_projection(model, x, seed=1):
    """Back-propagate a fixed random projection of every output (its gradient is never zero)."""
    model.zero_grad(set_to_none=True)
    outs = model(x)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    loss.backward()
    return outs, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('fast', [True, False])
def test_absent_modality_sample_has_finite_gradients(fast):
    from equiseg_mm.models import enable_fast_path
    # MiT's init_weights zeroes every bias, so a branch whose input is all zero (a dropped or
    # missing modality) keeps every token exactly zero: each of its LayerNorms normalises a
    # constant vector, where the gradient is multiplied by 1 / sqrt(eps) = 1000; over the
    # ~19 LayerNorms of this tiny branch that overflowed to inf, and inf - inf gave NaN
    # (issue 12: modality dropout stopped training at the 2nd iteration).
    torch.manual_seed(0)
    model = MultiModalMiT(modalities=['rgb', 'depth'], in_channels=[3, 1], **TINY)
    if fast:
        enable_fast_path(model)
    model.init_weights()
    model.train()
    x = torch.randn(2, 4, 64, 64)
    x[1, 3:] = 0  # sample 1 has no depth
    _, grads = _grad_of_random_projection(model, x)
    bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
    assert not bad, f'non-finite gradients: {bad}'


def test_absent_modality_sample_keeps_its_output_but_trains_only_the_rest():
    torch.manual_seed(0)
    model = MultiModalMiT(modalities=['rgb', 'depth'], in_channels=[3, 1], **TINY)
    model.init_weights()
    model.train()
    x = torch.randn(2, 4, 64, 64)
    x[1, 3:] = 0
    with torch.no_grad():
        plain = model(x)
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(o.shape, generator=gen) for o in plain]

    def grads(inputs, ws):
        model.zero_grad(set_to_none=True)
        outs = model(inputs)
        sum((o * w).sum() for o, w in zip(outs, ws)).backward()
        return outs, {n: p.grad.clone() for n, p in model.named_parameters()}

    outs, both = grads(x, weights)
    for a, b in zip(outs, plain):  # the forward is unchanged: zeros go through the branch
        assert torch.equal(a, b)
    _, first = grads(x[:1], [w[:1] for w in weights])
    _, second = grads(x[1:], [w[1:] for w in weights])

    def close(a, b):  # up to float32 rounding of sums of terms ~100
        return (a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-6

    for name, g in both.items():
        if name.startswith('branches.1.'):  # depth: trained by sample 0 only
            assert close(g, first[name]), name
            assert not second[name].any(), name  # zeros, not None: still in the graph
        else:
            assert close(g, first[name] + second[name]), name
    assert any(second[n].any() for n in second if n.startswith('branches.0.'))


# ---- whole-model checkpoints: the branches must fit (issue 22: no silent wrong answers) ----

def _tiny(mods, channels, **kwargs):
    return MultiModalMiT(modalities=mods, in_channels=channels, **kwargs, **TINY)


@pytest.mark.parametrize('mods, channels, what', [
    (['rgb', 'depth'], [3, 1], "['rgb', 'depth']"),                       # a branch fewer
    (['rgb', 'depth', 'event', 'lidar'], [3, 1, 3, 3], "'lidar'"),        # a branch more
    (['depth', 'rgb', 'event'], [1, 3, 3], "['depth', 'rgb', 'event']"),  # order swapped
    (['rgb', 'depth', 'event'], [3, 3, 3], 'input channels [3, 3, 3]'),   # channels differ
])
def test_a_checkpoint_of_other_modalities_is_an_error_naming_both(tmp_path, mods, channels,
                                                                     what):
    from equiseg_mm.utils import load_checkpoint_file
    trained = _tiny(['rgb', 'depth', 'event'], [3, 1, 3])
    path = str(tmp_path / 'ckpt.pth')
    torch.save({'state_dict': trained.state_dict()}, path)  # the names travel in its metadata
    state = load_checkpoint_file(path)['state_dict']
    with pytest.raises(ValueError, match=r"trained with modalities \['rgb', 'depth', 'event'\]"
                                         r' with input channels \[3, 1, 3\]') as err:
        _tiny(mods, channels).load_state_dict(state, strict=False)
    assert what in str(err.value) and 'partial_checkpoint=True' in str(err.value)
    _tiny(['rgb', 'depth', 'event'], [3, 1, 3]).load_state_dict(state)  # the same model loads


def test_a_checkpoint_without_recorded_names_is_checked_by_count_and_channels():
    state = dict(_tiny(['rgb', 'depth'], [3, 1]).state_dict())  # a plain dict: no metadata
    with pytest.raises(ValueError, match=r"\['branch 0', 'branch 1'\] with input channels "
                                         r'\[3, 1\]'):
        _tiny(['rgb', 'depth', 'event'], [3, 1, 3]).load_state_dict(state, strict=False)
    _tiny(['a', 'b'], [3, 1]).load_state_dict(state)  # same structure: loads


def test_partial_checkpoint_loads_matching_modalities_by_name_and_names_the_fresh_ones():
    torch.manual_seed(0)
    trained = _tiny(['rgb', 'depth', 'event'], [3, 1, 3])
    model = _tiny(['depth', 'lidar', 'rgb'], [1, 3, 3], partial_checkpoint=True)
    fresh = model.branches[1].state_dict()['layers.0.0.projection.weight'].clone()
    with pytest.warns(UserWarning, match=r"freshly initialised: \['lidar'\]"):
        result = model.load_state_dict(trained.state_dict(), strict=False)
    assert result.missing_keys and all(k.startswith('branches.1.') for k in result.missing_keys)
    for mine, theirs in ((0, 1), (2, 0)):  # depth <- depth, rgb <- rgb
        for key, value in trained.branches[theirs].state_dict().items():
            assert torch.equal(model.branches[mine].state_dict()[key], value), key
    assert torch.equal(model.branches[1].state_dict()['layers.0.0.projection.weight'], fresh)

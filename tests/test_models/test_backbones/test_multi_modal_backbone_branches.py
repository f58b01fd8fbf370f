"""MultiModalMiT with other backbones as branches: mmpretrain ConvNeXt / Swin / ResNet and mmseg's
ResNet, their pretrained loading from single-backbone checkpoints, and the neck width check."""
import importlib.util
import os.path as osp
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from mmengine.config import Config

import equiseg_mm  # noqa: F401  (compat fixes and registration)
import mmpretrain.models  # noqa: F401  (registers mmpretrain's backbones)
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from mmseg.registry import MODELS

from equiseg_mm.models.backbones import MultiModalMiT
from equiseg_mm.models.necks import CMTBNeck

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
# Small but real architectures (arch dicts), so that the tests stay fast.
CONVNEXT = dict(type='mmpretrain.ConvNeXt',
                arch=dict(depths=[1, 1, 1, 1], channels=[8, 16, 24, 32]),
                out_indices=(0, 1, 2, 3), gap_before_final_norm=False)
SWIN = dict(type='mmpretrain.SwinTransformer',
            arch=dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4]),
            out_indices=(0, 1, 2, 3), pad_small_map=True,  # 64x96: stage 3 is 4x6 < window 7
            drop_path_rate=0.)  # (0.1 by default: a block dropped for the whole batch gets no
            # gradient, which made the gradient test below fail about once in a hundred runs)
RESNET = dict(type='mmpretrain.ResNet', depth=18, stem_channels=16, base_channels=16,
              out_indices=(0, 1, 2, 3))
MMSEG_RESNET = dict(type='ResNetV1c', depth=18, stem_channels=16, base_channels=16,
                    norm_cfg=dict(type='BN'))
BRANCHES = dict(convnext=(CONVNEXT, [8, 16, 24, 32], 'downsample_layers.0.0.weight'),
                swin=(SWIN, [16, 32, 64, 128], 'patch_embed.projection.weight'),
                resnet=(RESNET, [16, 32, 64, 128], 'conv1.weight'),
                mmseg_resnet=(MMSEG_RESNET, [16, 32, 64, 128], 'stem.0.weight'))
HEAD_IN = dict(convnext=32, swin=128, resnet=128, mmseg_resnet=128)


def _multi(branch, channels=(3, 1), **kwargs):
    return MultiModalMiT(modalities=[f'm{i}' for i in range(len(channels))],
                         in_channels=list(channels), branch=dict(branch), **kwargs)


def _bare_backbone(name, seed=1):
    """One branch-architecture backbone (3 input channels) with distinctive random weights."""
    cfg = dict(BRANCHES[name][0])
    torch.manual_seed(seed)
    module = MODELS.build(cfg)
    module.init_weights()
    with torch.no_grad():  # norms start as ones/zeros: make every tensor distinctive
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return module


def _classifier_state_dict(name):
    """An mmpretrain ImageClassifier's state dict with this backbone: ``backbone.`` keys, a GAP
    neck (no tensors) and a ``head.fc`` linear classifier; the backbone as in a classification
    checkpoint (ConvNeXt and Swin: only the last stage's norm)."""
    cfg = {k: v for k, v in BRANCHES[name][0].items() if k != 'type'}
    cfg['type'] = BRANCHES[name][0]['type'].split('.')[-1]
    cfg.pop('out_indices')
    cfg.pop('gap_before_final_norm', None)
    clf = PRETRAIN_MODELS.build(dict(
        _scope_='mmpretrain', type='ImageClassifier', backbone=cfg,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=HEAD_IN[name])))
    torch.manual_seed(2)
    with torch.no_grad():
        for p in clf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return clf.state_dict()


def _check_loaded(model, state, first_conv, channels):
    """Every checkpoint tensor is in every branch exactly, except the input kernel of branches
    with other channel counts, which is the mean over RGB repeated and scaled by 3 / C."""
    for branch, c in zip(model.branches, channels):
        own = branch.state_dict()
        for key, value in state.items():
            if key == first_conv and c != value.shape[1]:
                expected = value.mean(1, keepdim=True).repeat(1, c, 1, 1) * value.shape[1] / c
                assert own[key].shape == expected.shape
                assert torch.allclose(own[key], expected, atol=1e-7), key
            else:
                assert torch.equal(own[key], value), key


# ---- registry ----

def test_mmpretrain_type_resolves_without_custom_imports():
    """In a fresh process, mmseg's scope alone resolves 'mmpretrain.ConvNeXt' for a branch."""
    code = (
        'import torch, equiseg_mm\n'
        'from mmengine.registry import DefaultScope\n'
        'from mmseg.registry import MODELS\n'
        "DefaultScope.get_instance('t', scope_name='mmseg')\n"
        f'm = MODELS.build(dict(type="MultiModalMiT", modalities=["a"], branch={CONVNEXT!r}))\n'
        "print(type(m.branches[0]).__module__, tuple(m(torch.zeros(1, 3, 32, 32))[3].shape))\n")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'mmpretrain.models.backbones.convnext (1, 1, 32, 1, 1)' in out.stdout


def test_scoped_type_of_a_missing_package_names_it():
    if importlib.util.find_spec('mmagic') is not None:
        pytest.skip('mmagic is installed here')
    with pytest.raises(ImportError, match=r"'mmagic.Foo' needs the 'mmagic' package"):
        _multi(dict(type='mmagic.Foo'))


def test_unknown_mmpretrain_type_raises():
    with pytest.raises(KeyError, match='mmpretrain.NoSuchNet'):
        _multi(dict(type='mmpretrain.NoSuchNet'))


# ---- shapes and gradients ----

@pytest.mark.parametrize('name', list(BRANCHES))
def test_branch_shapes_and_every_parameter_gets_a_gradient(name):
    branch, widths, first_conv = BRANCHES[name]
    torch.manual_seed(0)
    model = _multi(branch)
    model.init_weights()
    with torch.no_grad():  # no zero-initialised scales (mmpretrain ResNet's last BN per block)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    assert [b.state_dict()[first_conv].shape[1] for b in model.branches] == [3, 1]
    outs = model(torch.randn(2, 4, 64, 96))
    assert [tuple(o.shape) for o in outs] == [
        (2, 2, c, 64 // s, 96 // s) for c, s in zip(widths, [4, 8, 16, 32])]
    loss = sum((o * torch.randn_like(o)).sum() for o in outs)
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_pooled_branch_outputs_raise_with_a_hint():
    cfg = {k: v for k, v in CONVNEXT.items() if k != 'gap_before_final_norm'}
    model = _multi(cfg)
    with pytest.raises(ValueError, match=r"branch 'm0' \(ConvNeXt\).*gap_before_final_norm"):
        model(torch.randn(1, 4, 64, 96))


# ---- pretrained loading ----

@pytest.mark.parametrize('name', ['convnext', 'swin', 'resnet'])
@pytest.mark.parametrize('wrap', ['classifier', 'classifier_ddp'])
def test_loads_mmpretrain_classifier_checkpoint(tmp_path, name, wrap):
    full = _classifier_state_dict(name)
    assert any(k.startswith('head.') for k in full)
    if wrap == 'classifier_ddp':
        full = OrderedDict(('module.' + k, v) for k, v in full.items())
    path = str(tmp_path / 'clf.pth')
    torch.save(dict(meta=dict(), state_dict=full), path)
    model = _multi(BRANCHES[name][0], init_cfg=dict(type='Pretrained', checkpoint=path))
    if name == 'resnet':
        model.init_weights()  # same keys: nothing to warn about
    else:
        with pytest.warns(UserWarning, match='missing keys in source state_dict: norm0.weight'):
            model.init_weights()  # a classifier has only the last stage's norm
    state = OrderedDict((k.split('backbone.', 1)[1], v) for k, v in full.items()
                        if 'backbone.' in k)
    _check_loaded(model, state, BRANCHES[name][2], [3, 1])


@pytest.mark.parametrize('name', list(BRANCHES))
@pytest.mark.parametrize('wrap', ['bare', 'module'])
def test_loads_bare_backbone_state_dict(tmp_path, name, wrap):
    state = _bare_backbone(name).state_dict()
    saved = state if wrap == 'bare' else OrderedDict(('module.' + k, v) for k, v in state.items())
    path = str(tmp_path / 'bare.pth')
    torch.save(saved, path)
    model = _multi(BRANCHES[name][0], channels=(3, 1, 2),
                   init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    _check_loaded(model, state, BRANCHES[name][2], [3, 1, 2])


def test_adapted_first_conv_answers_equal_channels_like_the_rgb_kernel(tmp_path):
    path = str(tmp_path / 'bare.pth')
    torch.save(_bare_backbone('convnext').state_dict(), path)
    model = _multi(CONVNEXT, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    gray = torch.randn(1, 1, 32, 48)
    rgb = model.branches[0].downsample_layers[0][0](gray.repeat(1, 3, 1, 1))
    one = model.branches[1].downsample_layers[0][0](gray)
    assert torch.allclose(rgb, one, atol=1e-5)


def test_other_shape_mismatch_raises_naming_key_and_shapes(tmp_path):
    state = _bare_backbone('convnext').state_dict()
    # an inner convolution that differs only in its input channels is not an input kernel
    state['downsample_layers.1.1.weight'] = torch.randn(16, 5, 2, 2)
    path = str(tmp_path / 'bad.pth')
    torch.save(dict(state_dict=OrderedDict(('backbone.' + k, v) for k, v in state.items())), path)
    model = _multi(CONVNEXT, channels=(1, 3), init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError) as info:
        model.init_weights()
    msg = str(info.value)
    assert path in msg and "branch 'm0' (ConvNeXt, 1 input channels)" in msg
    assert 'size mismatch for downsample_layers.1.1.weight: checkpoint (16, 5, 2, 2), ' \
        'branch (16, 8, 2, 2)' in msg
    assert 'downsample_layers.0.0.weight' not in msg  # the input kernel was adapted


def test_checkpoint_of_another_architecture_raises(tmp_path):
    path = str(tmp_path / 'resnet.pth')
    torch.save(_bare_backbone('resnet').state_dict(), path)
    model = _multi(CONVNEXT, init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError, match=r"names a tensor of the branch .*downsample_layers"):
        model.init_weights()


@pytest.mark.parametrize('how', ['branch_init_cfg', 'branch_pretrained', 'pretrained'])
def test_pretrained_given_the_mmseg_ways(tmp_path, how):
    full = _classifier_state_dict('convnext')
    full['data_preprocessor.mean'] = torch.zeros(3)  # dropped with the other non-backbone keys
    path = str(tmp_path / 'clf.pth')
    torch.save(dict(state_dict=full), path)
    if how == 'branch_init_cfg':  # mmseg's backbone style, with mmengine's prefix option
        model = _multi(dict(CONVNEXT, init_cfg=dict(type='Pretrained', checkpoint=path,
                                                     prefix='backbone.')))
    elif how == 'branch_pretrained':
        model = _multi(dict(CONVNEXT, pretrained=path))
    else:  # what EncoderDecoder(pretrained=...) passes to its backbone
        model = _multi(CONVNEXT, pretrained=path)
    assert model.init_cfg['checkpoint'] == path
    branch_init = model.branches[0].init_cfg  # ConvNeXt's own default init is kept
    assert not (isinstance(branch_init, dict) and branch_init.get('type') == 'Pretrained')
    with pytest.warns(UserWarning, match='norm0'):
        model.init_weights()
    state = OrderedDict((k[len('backbone.'):], v) for k, v in full.items()
                        if k.startswith('backbone.'))
    _check_loaded(model, state, 'downsample_layers.0.0.weight', [3, 1])


@pytest.mark.parametrize('kwargs, match', [
    (dict(branch=dict(CONVNEXT, init_cfg=dict(type='Pretrained', checkpoint='a.pth')),
          init_cfg=dict(type='Pretrained', checkpoint='b.pth')), 'give one of them'),
    (dict(branch=dict(CONVNEXT, pretrained='a.pth'), init_cfg=dict(type='Kaiming')),
     'give one of them'),
    (dict(branch=dict(CONVNEXT, pretrained=['a.pth'])), 'checkpoint path'),
    (dict(branch=dict(CONVNEXT, init_cfg=[dict(type='Pretrained', checkpoint='a.pth')])),
     'branch init_cfg'),
    (dict(branch=dict(CONVNEXT, pretrained='a.pth',
                      init_cfg=dict(type='Pretrained', checkpoint='b.pth'))), 'both'),
    (dict(branch=CONVNEXT, pretrained='a.pth',
          init_cfg=dict(type='Pretrained', checkpoint='b.pth')), 'not both'),
    (dict(branch=CONVNEXT, pretrained=3), 'pretrained'),
])
def test_bad_pretrained_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiModalMiT(modalities=['rgb'], **kwargs)


def test_prefix_that_matches_nothing_raises(tmp_path):
    path = str(tmp_path / 'bare.pth')
    torch.save(_bare_backbone('convnext').state_dict(), path)
    model = _multi(CONVNEXT, init_cfg=dict(type='Pretrained', checkpoint=path, prefix='encoder.'))
    with pytest.raises(ValueError, match="prefix 'encoder.'"):
        model.init_weights()


def test_shipped_config_loads_a_classifier_checkpoint(tmp_path):
    """The ConvNeXt-V2-atto config, with its commented init_cfg switched on, loads an
    mmpretrain ConvNeXt-V2-atto classifier checkpoint into all four branches."""
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs', 'equiseg', 'equiseg_convnext-v2-atto_1xb8-1k_synthetic-rgbdel-96x96.py'))
    bb = {k: v for k, v in cfg.model.backbone.branch.items()
          if k not in ('type', 'out_indices', 'gap_before_final_norm')}
    clf = PRETRAIN_MODELS.build(dict(
        _scope_='mmpretrain', type='ImageClassifier', backbone=dict(bb, type='ConvNeXt'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=320)))
    path = str(tmp_path / 'convnext-v2-atto_in1k.pth')
    torch.save(dict(meta=dict(), state_dict=clf.state_dict()), path)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=path)
    cfg.model.backbone.in_channels = [3, 1, 3, 3]  # a one-channel depth map
    cfg.model.data_preprocessor.channels = [3, 1, 3, 3]
    model = MODELS.build(cfg.model)
    with pytest.warns(UserWarning, match='norm0'):
        model.init_weights()
    state = OrderedDict((k[len('backbone.'):], v) for k, v in clf.state_dict().items()
                        if k.startswith('backbone.'))
    _check_loaded(model.backbone, state, 'downsample_layers.0.0.weight', [3, 1, 3, 3])


# ---- the neck's width check ----

def test_neck_names_both_widths_when_they_disagree():
    backbone = _multi(CONVNEXT)  # stage widths 8, 16, 24, 32
    neck = CMTBNeck(in_channels=[8, 16, 32, 32], num_heads=[1, 1, 1, 1], sr_ratios=[4, 2, 1, 1])
    feats = backbone(torch.randn(1, 4, 64, 96))
    with pytest.raises(ValueError) as info:
        neck(feats)
    msg = str(info.value)
    assert 'stage widths [8, 16, 24, 32]' in msg and 'in_channels=[8, 16, 32, 32]' in msg
    assert 'stage 2: 24 vs 32' in msg
    matching = CMTBNeck(in_channels=[8, 16, 24, 32], num_heads=[1, 1, 1, 1],
                        sr_ratios=[4, 2, 1, 1])
    assert len(matching(feats)) == 8
    with pytest.raises(ValueError, match=r'expects 4 stages \(in_channels \[8, 16, 24, 32\]\), '
                       r'got 3'):
        matching(feats[:3])


class _OneMap(torch.nn.Module):
    """A branch that returns one (B, C, H, W) tensor instead of a tuple of stages."""

    def __init__(self, in_channels=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 4, 3, stride=4, padding=1)

    def forward(self, x):
        return self.conv(x)


def test_single_tensor_branch_trains_with_an_absent_modality():
    MODELS.register_module(name='_TestOneMapBranch', module=_OneMap, force=True)
    backbone = MultiModalMiT(modalities=['rgb', 'depth'], in_channels=[3, 3],
                             branch=dict(type='_TestOneMapBranch'))
    x = torch.randn(2, 6, 16, 16)
    x[1, 3:] = 0  # sample 1 has no depth
    (out, ) = backbone(x)
    assert out.shape == (2, 2, 4, 4, 4)
    out.sum().backward()
    grads = backbone.branches[1].conv.weight.grad
    assert grads is not None and torch.isfinite(grads).all()

"""Every shipped leaf config builds through the stock mmseg runner and runs loss/predict/tensor."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import equiseg_mm  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
LEAF_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'equiseg', '*.py')) +
                      glob.glob(osp.join(ROOT, 'configs', 'baselines', '*.py')))


def _fake_batch(cfg, h=64, w=96, batch=2):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    channels = sum(cfg.model.data_preprocessor.channels)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (channels, h, w), dtype=torch.uint8))
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, cfg.model.decode_head.num_classes, (1, h, w)))
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _predict_and_tensor(model, cfg):
    """Run the predict and tensor modes in eval mode and check their shapes; the batch."""
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(_fake_batch(cfg), training=False)
        preds = model(**data, mode='predict')
        logits = model(**data, mode='tensor')
    assert preds[0].pred_sem_seg.data.shape[-2:] == (64, 96)
    assert logits.shape[1] == cfg.model.decode_head.num_classes
    return data


def test_there_are_configs():
    names = [osp.basename(p) for p in LEAF_CONFIGS]
    assert 'equiseg_mit-b0_8xb2-160k_deliver-rgbdel-1024x1024.py' in names
    assert 'equiseg_mit-b2_8xb2-160k_deliver-rgbdel-1024x1024.py' in names
    assert any('synthetic' in n for n in names)
    assert any(n.startswith('equiseg-nosgm') for n in names)
    assert any('rgbd-' in n for n in names)
    assert any('muses' in n for n in names)
    # mmpretrain backbones as branches
    assert 'equiseg_convnext-v2-atto_1xb8-1k_synthetic-rgbdel-96x96.py' in names
    assert 'equiseg_swin-tiny-patch4-window7_1xb8-1k_synthetic-rgbdel-96x96.py' in names
    assert 'earlyfusion_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py' in names  # the demo's baseline


@pytest.mark.parametrize('path', LEAF_CONFIGS, ids=[osp.basename(p) for p in LEAF_CONFIGS])
def test_config_builds_and_runs(path, tmp_path):
    from mmengine.runner import Runner
    cfg = Config.fromfile(path)
    # modalities are named once and must agree everywhere they flow
    mods = list(cfg.modalities)
    assert list(cfg.model.data_preprocessor.modalities) == mods
    multi_branch = cfg.model.backbone.type == 'MultiModalMiT'
    if multi_branch:
        assert list(cfg.model.backbone.modalities) == mods
    else:  # early fusion: one backbone over every stacked channel
        assert cfg.model.backbone.in_channels == sum(cfg.model.data_preprocessor.channels)
        assert cfg.model.get('neck') is None and cfg.model.get('auxiliary_head') is None
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert list(cfg[loader].dataset.modalities) == mods, loader
    if cfg.model.get('neck'):
        assert cfg.model.neck.get('num_modalities', len(mods)) == len(mods)
    assert 'data_preprocessor' not in cfg  # only model.data_preprocessor, no stale copy
    # the neck keeps the backbone's stage widths, and both heads read the neck's maps
    widths = list(cfg.model.neck.in_channels if cfg.model.get('neck')
                  else cfg.model.decode_head.in_channels)
    assert list(cfg.model.decode_head.in_channels) == widths
    if cfg.model.get('auxiliary_head'):
        assert list(cfg.model.auxiliary_head.in_channels) == widths
    branch = cfg.model.backbone.get('branch') if multi_branch else None
    if branch is not None and branch['type'].startswith('mmpretrain.'):
        assert 'embed_dims' not in cfg.model.backbone  # no ignored MiT arguments left behind
    cfg.work_dir = str(tmp_path)
    # a tiny input: pad to a multiple of 32 instead of the 1024x1024 crop, small slide windows
    cfg.model.data_preprocessor.size = None
    cfg.model.data_preprocessor.size_divisor = 32
    if cfg.model.test_cfg.get('mode') == 'slide':
        cfg.model.test_cfg.update(crop_size=(48, 48), stride=(32, 32))
    cfg.model.backbone.pop('init_cfg', None)  # no pretrained weights on this machine
    # SyncBN needs a process group; the runner converts it only when distributed
    runner = Runner.from_cfg(cfg)
    model = runner.model
    model.train()
    data = model.data_preprocessor(_fake_batch(cfg), training=True)
    losses = model(**data, mode='loss')
    assert all(torch.isfinite(v).all() for k, v in losses.items() if k.startswith('loss')
               or '.loss' in k)
    if cfg.model.get('auxiliary_head'):
        assert any('sgm' in k for k in losses)
    data = _predict_and_tensor(model, cfg)
    with torch.no_grad():  # the backbone's stage widths are the configured ones
        feats = model.backbone(data['inputs'][:1])
    assert [f.shape[2 if multi_branch else 1] for f in feats] == widths
    # the configured test loop builds (it needs the model's preprocessor and the metric)
    if cfg.test_cfg.get('type') == 'MissingModalityTestLoop':
        from equiseg_mm.engine import MissingModalityTestLoop
        from unittest import mock
        with mock.patch.object(Runner, 'build_dataloader', lambda self, loader, **kw: loader):
            loop = runner.build_test_loop(runner._test_loop)
        assert isinstance(loop, MissingModalityTestLoop)


@pytest.mark.parametrize('name', ['equiseg-paperneck_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py',
                                  'equiseg-paperneck_mit-b0_8xb2-160k_deliver-rgbdel-1024x1024.py'])
def test_paperneck_configs_build_the_papers_block(name):
    """The paper's CMTB is one config away: the paperneck configs give the neck's class defaults
    (the paper's block) for every option the shipped configs change."""
    import inspect

    from equiseg_mm.models.necks import CMTBNeck
    neck = Config.fromfile(osp.join(ROOT, 'configs', 'equiseg', name)).model.neck
    defaults = inspect.signature(CMTBNeck).parameters
    for key in ('aux_summary', 'cross_sr_ratios', 'self_attn'):
        assert neck[key] == defaults[key].default, key
    shipped = Config.fromfile(osp.join(ROOT, 'configs', 'equiseg', name.replace(
        'equiseg-paperneck_', 'equiseg_'))).model.neck
    assert shipped.self_attn == [False, False, True, True]
    assert {k: v for k, v in neck.items() if k not in ('aux_summary', 'cross_sr_ratios',
                                                       'self_attn')} == \
        {k: v for k, v in shipped.items() if k not in ('aux_summary', 'cross_sr_ratios',
                                                       'self_attn')}


def test_removing_the_auxiliary_head_alone_drops_the_sgm():
    """The neck -> head contract: one config change drops the SGM, and the shipped no-SGM config
    is exactly that change; the eval-mode neck produces no per-modality stacks."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    path = osp.join(ROOT, 'configs', 'equiseg', 'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
    cfg = Config.fromfile(path)
    assert cfg.model.get('auxiliary_head') is not None
    cfg.model.auxiliary_head = None  # the one change
    nosgm = Config.fromfile(path.replace('equiseg_mit', 'equiseg-nosgm_mit'))
    assert nosgm.model.to_dict() == cfg.model.to_dict()

    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    neck_outs = []
    model.neck.register_forward_hook(lambda module, args, out: neck_outs.append(out))
    model.train()
    data = model.data_preprocessor(_fake_batch(cfg), training=True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg'}
    model.parse_losses(losses)[0].backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused  # nothing left for DDP to complain about
    data = _predict_and_tensor(model, cfg)
    assert len(neck_outs) == 3 and all(len(o) == 8 for o in neck_outs)
    assert all(o[4:] == (None, ) * 4 for o in neck_outs[1:])  # eval: no stacks computed


def test_sgm_config_reads_the_neck_stacks_by_the_contract():
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'equiseg',
                                   'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py'))
    assert 'in_index' not in cfg.model.auxiliary_head  # the head's default: the neck's stacks
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    assert model.auxiliary_head.in_index == [-4, -3, -2, -1]
    read, select = [], model.auxiliary_head.forward  # SGMHead.loss calls forward directly

    def spy(inputs):
        read.extend(select(inputs))
        return read[-4:]

    model.auxiliary_head.forward = spy
    model.train()
    data = model.data_preprocessor(_fake_batch(cfg), training=True)
    losses = model(**data, mode='loss')
    assert losses['aux.loss_sgm'] > 0
    assert [tuple(f.shape[:3]) for f in read] == [(2, 4, c) for c in cfg.model.neck.in_channels]


@pytest.mark.parametrize('path', LEAF_CONFIGS, ids=[osp.basename(p) for p in LEAF_CONFIGS])
def test_speed_is_one_switch(path):
    """Every shipped config builds mmseg's own head and MiT parts; the one switch
    ``model.fast_path`` is on for EQUISeg and off for the early-fusion baseline (mmseg's own
    computation). tests/test_models/test_utils/test_fast_path.py shows both paths agree."""
    model = Config.fromfile(path).model
    assert model.type == 'MultiModalEncoderDecoder'
    assert model.decode_head.type == 'SegformerHead'
    assert model.fast_path is (not osp.basename(path).startswith('earlyfusion'))

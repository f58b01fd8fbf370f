"""The compatibility fixes (which the suite opts in to, as the tools do, in ``conftest.py``):
each works and is idempotent, opt-in names are checked, and mmengine checkpoints round-trip.
What ``import equiseg_mm`` does without the opt-in: ``test_import_side_effects.py``."""
import os
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.runner.checkpoint import CheckpointLoader

from equiseg_mm import compat


def test_the_suite_opted_in_and_enable_is_idempotent():
    assert os.environ[compat.ENV_VAR] == 'all'
    ops_before = sys.modules['mmcv.ops']
    assert CheckpointLoader._schemes[''] is compat._load_local_checkpoint
    assert compat.enable('all', 'mmcv_ops') == {'mmcv_ops': False, 'checkpoint_loader': False}
    assert compat.enable() == {} and compat.enable(' ', '') == {}
    assert sys.modules['mmcv.ops'] is ops_before  # not replaced a second time


def test_unknown_fix_names_are_refused(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown .*\['mmcv'\].*checkpoint_loader.*'all'"):
        compat.enable('mmcv')
    monkeypatch.setenv(compat.ENV_VAR, 'mmcv_ops, checkpoint-loader')
    with pytest.raises(ValueError, match='checkpoint-loader'):
        compat.enable_from_env()
    monkeypatch.setenv(compat.ENV_VAR, ' mmcv_ops , checkpoint_loader')
    assert compat.enable_from_env() == {'mmcv_ops': False, 'checkpoint_loader': False}


def test_mmseg_packages_import():
    import mmseg.apis  # noqa: F401
    import mmseg.datasets  # noqa: F401
    import mmseg.models  # noqa: F401
    from mmseg.registry import MODELS
    assert MODELS.get('SegformerHead') is not None


def test_point_sample_stand_in_is_mmcv_point_sample():
    from mmcv.ops import point_sample
    feat = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    points = torch.rand(2, 7, 2)
    out = point_sample(feat, points, align_corners=False)
    expected = F.grid_sample(feat, (2 * points - 1).unsqueeze(2), align_corners=False)
    assert out.shape == (2, 3, 7)
    torch.testing.assert_close(out, expected.squeeze(3))


def test_compiled_ops_fail_with_a_clear_error():
    ops = sys.modules['mmcv.ops']
    if not getattr(ops, '__equiseg_stub__', False):
        pytest.skip('full mmcv with compiled ops is installed')
    with pytest.raises(ModuleNotFoundError, match='full mmcv'):
        from mmcv.ops import CrissCrossAttention  # noqa: F401
    with pytest.raises(RuntimeError, match='CrossEntropyLoss'):
        ops.sigmoid_focal_loss(torch.zeros(1), torch.zeros(1))


def test_the_pinned_stack_has_torchvision_and_mmpretrain():
    """mmpretrain's models import ``torchvision.ops`` at import time: both belong to the stack."""
    import mmpretrain.models  # noqa: F401
    import torchvision.ops  # noqa: F401
    from mmseg.registry import MODELS
    assert MODELS.get('mmpretrain.ConvNeXt') is not None


def test_installed_metadata_does_not_force_mmcv_lite():
    """``pip install`` of the plugin must not put mmcv-lite over a user's full mmcv: mmcv is named
    only in optional extras, as in mmseg's own metadata."""
    from importlib.metadata import requires
    from packaging.requirements import Requirement
    reqs = [Requirement(r) for r in requires('equiseg-mm') or []]
    names = {r.name.lower() for r in reqs if r.marker is None}
    assert 'mmsegmentation' in names and 'mmengine' in names  # the metadata is really read
    assert not names & {'mmcv', 'mmcv-lite'}, sorted(names)
    extras = {r.name.lower(): str(r.marker) for r in reqs if r.marker is not None}
    assert 'extra' in extras.get('mmcv', '') and 'extra' in extras.get('mmcv-lite', '')


def test_version_guard_names_the_package(monkeypatch):
    import mmseg
    monkeypatch.setattr(mmseg, '__version__', '0.30.0')
    with pytest.raises(ImportError, match=r'mmseg 0\.30\.0 is installed but equiseg_mm needs'):
        compat.check_versions()


class _ToyModel(nn.Module):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels, mode='tensor'):
        pred = self.linear(torch.stack(inputs))
        if mode == 'loss':
            return {'loss': F.mse_loss(pred.squeeze(1), torch.stack(labels))}
        return pred


def _toy_model():
    from mmengine.model import BaseModel

    class ToyModel(BaseModel):

        def __init__(self):
            super().__init__()
            self.net = _ToyModel()

        def forward(self, inputs, labels, mode='tensor'):
            return self.net(inputs, labels, mode)

    return ToyModel()


class _ToyDataset(torch.utils.data.Dataset):
    metainfo = dict()

    def __len__(self):
        return 8

    def __getitem__(self, idx):
        x = torch.tensor([float(idx), 1.0])
        return dict(inputs=x, labels=x.sum())


def _runner(work_dir, max_iters, resume=False, hooks=()):
    from mmengine.runner import Runner
    return Runner(
        custom_hooks=list(hooks),
        model=_toy_model(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=_ToyDataset(), sampler=dict(type='DefaultSampler'),
                              batch_size=2, num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume,
        default_scope='mmengine',
        experiment_name=f'toy_{max_iters}_{resume}')


def test_checkpoint_save_load_resume(tmp_path):
    from mmengine.runner import load_checkpoint
    runner = _runner(tmp_path, max_iters=4)
    runner.train()
    ckpt = tmp_path / 'iter_4.pth'
    assert ckpt.is_file()
    # the message hub holds HistoryBuffer objects: plain weights_only=True refuses this file,
    # mmengine's loader (equiseg_mm's safe loader, opted in) still loads it with weights_only=True
    with pytest.raises(Exception):
        torch.load(ckpt, weights_only=True)
    model = _toy_model()
    load_checkpoint(model, str(ckpt), map_location='cpu')
    torch.testing.assert_close(model.net.linear.weight, runner.model.net.linear.weight)
    # resume: a longer schedule picks up at iteration 4 and finishes at 6
    from mmengine.hooks import Hook

    class CountIters(Hook):
        seen = []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.seen.append(runner.iter)

    counter = CountIters()
    resumed = _runner(tmp_path, max_iters=6, resume=True, hooks=[counter])
    resumed.train()
    assert resumed.iter == 6
    assert counter.seen == [4, 5]  # 0-based: only the two remaining iterations ran
    assert (tmp_path / 'iter_6.pth').is_file()

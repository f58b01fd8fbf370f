"""FiniteLossHook stops at the first NaN/Inf loss, before the broken weights are checkpointed."""
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner

import equiseg_mm  # noqa: F401
from equiseg_mm.engine import FiniteLossHook


class _NaNAfter(BaseModel):
    """A linear model whose loss turns NaN from the ``bad_iter``-th call on."""

    def __init__(self, bad_iter):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.calls = 0
        self.bad_iter = bad_iter

    def forward(self, inputs, labels=None, mode='tensor'):
        self.calls += 1
        loss = ((self.linear(torch.stack(inputs)) - 1) ** 2).mean()
        if self.calls >= self.bad_iter:
            loss = loss * float('nan')
        return {'loss': loss}


class _Data(torch.utils.data.Dataset):

    def __len__(self):
        return 16

    def __getitem__(self, idx):
        return dict(inputs=torch.tensor([float(idx), 1.0]))


def test_training_stops_before_saving_nan_weights(tmp_path):
    runner = Runner(
        model=_NaNAfter(bad_iter=4), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=_Data(), sampler=dict(type='DefaultSampler'),
                              batch_size=2, num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=8),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False)),
        custom_hooks=[dict(type='FiniteLossHook')], default_scope='mmseg',
        experiment_name='finite_loss_hook')
    with pytest.raises(FloatingPointError, match=r'non-finite loss at iteration 4.*--resume'):
        runner.train()
    saved = sorted(p.name for p in tmp_path.glob('iter_*.pth'))
    assert saved == ['iter_1.pth', 'iter_2.pth', 'iter_3.pth']  # iteration 4 was not saved
    ckpt = torch.load(tmp_path / 'iter_3.pth', weights_only=False)
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values())


def test_finite_losses_pass_and_bad_interval_is_rejected():
    class _Runner:
        iter = 0
        work_dir = '/nonexistent'

    hook = FiniteLossHook()
    hook.after_train_iter(_Runner(), 0, outputs={'loss': torch.tensor(1.5), 'acc': 99.0})
    with pytest.raises(FloatingPointError, match=r"'decode.loss_ce': inf.*no checkpoint"):
        hook.after_train_iter(_Runner(), 0, outputs={'decode.loss_ce': torch.tensor(float('inf'))})
    with pytest.raises(ValueError, match='interval'):
        FiniteLossHook(interval=0)

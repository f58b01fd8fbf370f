"""Stop training at the first non-finite loss with a message that says what to do."""
import math
import os.path as osp
from typing import Optional

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise ``FloatingPointError`` at a NaN or infinite training loss, before it is checkpointed.

    Args:
        interval (int): Check every ``interval`` iterations. Defaults to 1.
    """

    priority = 'VERY_HIGH'  # before CheckpointHook saves anything

    def __init__(self, interval: int = 1) -> None:
        if interval < 1:
            raise ValueError(f'FiniteLossHook: interval must be >= 1, got {interval}')
        self.interval = interval

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs or not self.every_n_train_iters(runner, self.interval):
            return
        bad = {}
        for key, value in outputs.items():
            value = float(value.detach().mean()) if hasattr(value, 'detach') else value
            if isinstance(value, float) and not math.isfinite(value):
                bad[key] = value
        # a NaN on one rank reaches every rank's weights through DDP: all ranks stop together
        flag = torch.tensor([1.0 if bad else 0.0])
        all_reduce(flag, op='max')
        if flag.item() == 0:
            return
        if not bad:
            bad = {'loss (on another rank)': float('nan')}
        last = osp.join(runner.work_dir, 'last_checkpoint')
        where = (f'the last good checkpoint is listed in {last}' if osp.exists(last) else
                 'no checkpoint was written yet')
        raise FloatingPointError(
            f'non-finite loss at iteration {runner.iter + 1}: {bad}. Training stopped before '
            f'saving the broken weights ({where}). Fix: lower the learning rate '
            '(optim_wrapper.optimizer.lr), enable gradient clipping '
            '(optim_wrapper.clip_grad=dict(max_norm=1.0)), or check the inputs for NaN/Inf '
            '(e.g. 16-bit depth without a matching mean/std); then rerun with --resume.')

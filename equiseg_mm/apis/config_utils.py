"""Config preparation shared by ``tools/train.py``, ``tools/test.py`` and the demo."""
import logging
import os.path as osp
from typing import Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.logging import print_log


def prepare_config(config: str,
                   work_dir: Optional[str] = None,
                   cfg_options: Optional[dict] = None,
                   launcher: str = 'none',
                   amp: bool = False,
                   resume: bool = False) -> Config:
    """Load a config and apply mmseg's usual command-line overrides.

    Work-dir priority is CLI > config > ``work_dirs/<config name>`` (as mmseg). On a machine
    without CUDA, a distributed launch uses the ``gloo`` backend instead of ``nccl``.

    Args:
        config (str): Path of the config file.
        work_dir (str, optional): Overrides ``cfg.work_dir``. Defaults to None.
        cfg_options (dict, optional): ``--cfg-options`` key/values. Defaults to None.
        launcher (str): 'none', 'pytorch', 'slurm' or 'mpi'. Defaults to 'none'.
        amp (bool): Switch ``OptimWrapper`` to ``AmpOptimWrapper``. Defaults to False.
        resume (bool): Resume from the last checkpoint in the work dir. Defaults to False.

    Returns:
        Config: the prepared config.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file {config!r} does not exist')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    if amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            print_log('AMP is already enabled in the config.', logger='current',
                      level=logging.WARNING)
        elif wrapper != 'OptimWrapper':
            raise ValueError(f'--amp needs optim_wrapper.type="OptimWrapper", got {wrapper!r}')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.resume = resume
    if launcher != 'none' and not torch.cuda.is_available():
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    return cfg


def runner_from_config(cfg: Config):
    """Build mmengine's Runner (or ``cfg.runner_type``) from a prepared config."""
    from mmengine.runner import Runner
    from mmseg.registry import RUNNERS
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def common_arguments(parser, launcher_choices: Sequence[str] = ('none', 'pytorch', 'slurm',
                                                                  'mpi')) -> None:
    """Add the arguments ``tools/train.py`` and ``tools/test.py`` share (mmseg's surface)."""
    import os

    from mmengine.config import DictAction
    parser.add_argument('--work-dir', help='the dir to save logs, checkpoints and reports')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. train_cfg.max_iters=100 '
        'model.auxiliary_head.loss_weight=0.5')
    parser.add_argument('--launcher', choices=list(launcher_choices), default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    os.environ.setdefault('LOCAL_RANK', '0')

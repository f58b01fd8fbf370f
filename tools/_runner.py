"""Runner plumbing of the scripts in ``tools/`` (private to them; the user API is
:mod:`equiseg_mm.apis`): a config with mmseg's command-line overrides applied, a distributed launch
adapted to CPU processes, the runner, and :func:`train_and_test`, the unit of work of
``run_demo.py`` and ``sweep.py``."""
import logging
import os
import os.path as osp
import sys
import time
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
    without CUDA, a distributed launch is adapted to run on CPU processes (see
    :func:`_adapt_to_cpu_distributed`): ``gloo`` instead of ``nccl``, ``BN`` instead of
    ``SyncBN``, and a DDP wrapper without ``device_ids``.

    Args:
        config (str): Path of the config file.
        work_dir (str, optional): Overrides ``cfg.work_dir``. Defaults to None.
        cfg_options (dict, optional): ``--cfg-options`` key/values. Defaults to None.
        launcher (str): 'none', 'pytorch', 'slurm' or 'mpi'. Defaults to 'none'.
        amp (bool): Switch ``OptimWrapper`` to ``AmpOptimWrapper``. Defaults to False. (Whether
            the machine can train that way is :func:`check_amp_device`'s question, asked by
            the training entry points: testing an AMP config needs no GPU.)
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
        _adapt_to_cpu_distributed(cfg)
    return cfg


def check_amp_device(cfg: Config) -> None:
    """Before training: a clear error where ``cfg`` trains in mixed precision and no device
    here accepts it (mmengine's ``AmpOptimWrapper`` otherwise fails with an assertion once the
    runner builds it).

    Raises:
        ValueError: ``cfg.optim_wrapper.type`` is ``'AmpOptimWrapper'`` (``--amp`` sets it) and
            neither CUDA, NPU, MLU nor MUSA is available.
    """
    from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                                 is_npu_available)
    wrapper = cfg.get('optim_wrapper') or {}
    if wrapper.get('type') != 'AmpOptimWrapper':
        return
    # the devices AmpOptimWrapper's own check accepts
    if not (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available()):
        raise ValueError(
            'mixed precision (--amp, or optim_wrapper.type="AmpOptimWrapper" in the config) '
            "needs a GPU (mmengine's AmpOptimWrapper runs on CUDA, NPU, MLU or MUSA devices) "
            'and none is available here: train without --amp, and where the config itself '
            'sets it, with --cfg-options optim_wrapper.type=OptimWrapper')


def _revert_sync_bn_cfg(node):
    """Replace every ``dict(type='SyncBN')`` in a config tree by ``dict(type='BN')``."""
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
        for value in node.values():
            _revert_sync_bn_cfg(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _revert_sync_bn_cfg(value)
    return node


def _adapt_to_cpu_distributed(cfg: Config) -> None:
    """Let a distributed launch run on CPU processes, where three mmengine defaults fail.

    - ``nccl`` needs CUDA: the process group uses ``gloo``.
    - torch's ``SyncBatchNorm`` refuses CPU tensors, and mmengine reverts SyncBN only when *not*
      distributed: every ``SyncBN`` of ``cfg.model`` becomes ``BN`` (batch statistics per
      process; DDP's default buffer syncing keeps the running statistics equal to rank 0's), and
      ``cfg.sync_bn`` is dropped.
    - mmengine wraps the model in DDP with ``device_ids=[LOCAL_RANK]``, which DDP rejects for
      a CPU module: ``model_wrapper_cfg`` passes ``device_ids=None``.

    The process group itself is created by :func:`runner_from_config`, because mmengine's
    ``init_dist`` calls ``torch.cuda.set_device``, which fails on a CPU-only torch.
    """
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    _revert_sync_bn_cfg(cfg.model)
    if cfg.pop('sync_bn', None) is not None:
        print_log('sync_bn is ignored: SyncBatchNorm needs CUDA.', logger='current',
                  level=logging.WARNING)
    wrapper = cfg.get('model_wrapper_cfg', None)
    if wrapper is None:
        # DDP's default buffer syncing stays on (mmengine's default wrapper turns it off)
        wrapper = dict(type='MMDistributedDataParallel',
                       find_unused_parameters=cfg.get('find_unused_parameters', False))
    if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def _init_cpu_process_group(cfg: Config) -> None:
    """Create the ``gloo`` process group of a ``pytorch`` (torchrun) launch without CUDA.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device(LOCAL_RANK)`` before
    ``init_process_group``; on a CPU-only torch that raises ``AttributeError``. The runner skips
    ``init_dist`` when a process group exists, so it is created here (the ``slurm`` and ``mpi``
    launchers are left to mmengine).
    """
    import datetime

    import torch.distributed as torch_dist
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available() or \
            not torch_dist.is_available() or torch_dist.is_initialized():
        return
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    dist_cfg['backend'] = 'gloo'
    if dist_cfg.get('timeout') is not None:
        dist_cfg['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    torch_dist.init_process_group(**dist_cfg)


def runner_from_config(cfg: Config):
    """Build mmengine's Runner (or ``cfg.runner_type``) from a prepared config.

    A ``pytorch`` launch on a machine without CUDA gets its ``gloo`` process group here (see
    :func:`_init_cpu_process_group`).
    """
    from mmengine.runner import Runner
    from mmseg.registry import RUNNERS
    _init_cpu_process_group(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def common_arguments(parser, launcher_choices: Sequence[str] = ('none', 'pytorch', 'slurm',
                                                                  'mpi')) -> None:
    """Add the arguments ``tools/train.py`` and ``tools/test.py`` share (mmseg's surface)."""
    from mmengine.config import DictAction
    parser.add_argument('--work-dir', help='the dir to save logs, checkpoints and reports')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. train_cfg.max_iters=100 '
        'model.auxiliary_head.loss_weight=0.5')
    parser.add_argument('--launcher', choices=list(launcher_choices), default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK itself
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def scale_schedule(cfg: Config, max_iters: int) -> None:
    """Set ``train_cfg.max_iters`` (validation at the end) and stretch every iteration-based
    ``param_scheduler`` (warm-up and decay) from the config's schedule length to ``max_iters``."""
    old = cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters
    schedulers = cfg.get('param_scheduler', None) or []
    for sched in [schedulers] if isinstance(schedulers, dict) else schedulers:
        if sched.get('by_epoch', True):  # mmengine's default: counted in epochs, not iterations
            continue
        sched['begin'] = min(round(sched.get('begin', 0) * max_iters / old), max_iters - 1)
        sched['end'] = max(sched['begin'] + 1, round(sched.get('end', old) * max_iters / old))


# mmengine's own deprecation notices about its file backends: noise for a user of the runner
_CONSOLE_NOISE = ('"FileClient" will be deprecated', '"HardDiskBackend" is the alias')


def _not_noise(record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in _CONSOLE_NOISE)


def build_quiet_runner(cfg: Config, console_level: int = logging.WARNING):
    """Build the runner with its console handler at ``console_level``: the environment and
    config dump (hundreds of lines), the INFO log and mmengine's file-backend deprecation notices
    go to the log file only."""
    real = sys.stdout
    with open(os.devnull, 'w') as null:
        sys.stdout = null  # mmengine's console handler binds the stream it sees at creation
        try:
            runner = runner_from_config(cfg)
        finally:
            sys.stdout = real
        for handler in runner.logger.handlers:
            if type(handler) is logging.StreamHandler:  # the console, not the FileHandler
                handler.setStream(real)
                handler.setLevel(console_level)
                handler.addFilter(_not_noise)
    return runner


def spread_indices(dataset, num: int) -> list:
    """Up to ``num`` sample indices spread over the dataset's conditions and failure cases: the
    first sample of each (condition, case) group, taking one group per condition in turn, the
    clean group of each condition first (a dataset without ``condition``/``case`` in its data
    infos gives evenly spaced samples)."""
    groups = {}
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        key = (info.get('condition'), info.get('case'))
        groups.setdefault(key, idx)
    if len(groups) <= 1:
        step = max(1, len(dataset) // max(1, num))
        return list(range(0, len(dataset), step))[:num]
    by_condition = {}  # clean frames first, then the failure cases
    ordered = sorted(groups.items(), key=lambda item: (item[0][1] != 'clean', item[1]))
    for (condition, _), idx in ordered:
        by_condition.setdefault(condition, []).append(idx)
    picked, rank = [], 0
    while len(picked) < num and any(len(v) > rank for v in by_condition.values()):
        picked += [v[rank] for v in by_condition.values() if len(v) > rank]
        rank += 1
    return picked[:num]


def train_and_test(config: str,
                   work_dir: str,
                   data_root: Optional[str] = None,
                   seed: int = 0,
                   max_iters: Optional[int] = None,
                   cfg_options: Optional[dict] = None,
                   quiet: bool = False,
                   hooks: Sequence = (),
                   num_panels: int = 0) -> dict:
    """Train ``config`` and run its test loop (the robustness loop in the shipped configs).

    Args:
        config (str): Config path.
        work_dir (str): Work dir of this run.
        data_root (str, optional): Overrides the three dataloaders' ``data_root``.
        seed (int): ``randomness.seed``. Defaults to 0.
        max_iters (int, optional): Shorter or longer schedule (see :func:`scale_schedule`).
        cfg_options (dict, optional): Further overrides, applied last.
        quiet (bool): Console at WARNING level (see :func:`build_quiet_runner`). Defaults to
            False.
        hooks (Sequence[Hook]): Hook instances to register before training (e.g. a
            :class:`~equiseg_mm.engine.ProgressHook`). Defaults to ().
        num_panels (int): Test samples drawn as modality panels, spread over conditions and
            failure cases (:func:`spread_indices`). Defaults to 0.

    Returns:
        dict: ``metrics`` (the test metrics), ``train_s``, ``test_s``, ``work_dir``, ``log_dir``,
        ``panels_dir`` (None without panels) and ``max_iters``.
    """
    options = {'randomness.seed': seed,
               'experiment_name': f'{os.path.basename(work_dir)}_{time.strftime("%Y%m%d_%H%M%S")}'}
    if data_root is not None:
        for loader in ('train', 'val', 'test'):
            options[f'{loader}_dataloader.dataset.data_root'] = data_root
    options.update(cfg_options or {})
    cfg = prepare_config(config, work_dir=work_dir, cfg_options=options)
    if max_iters:
        scale_schedule(cfg, max_iters)
    check_amp_device(cfg)
    runner = build_quiet_runner(cfg) if quiet else runner_from_config(cfg)
    for hook in hooks:
        runner.register_hook(hook)
    start = time.time()
    runner.train()
    train_s = time.time() - start
    start = time.time()
    metrics = runner.test()
    test_s = time.time() - start
    panels_dir = None
    if num_panels > 0:
        from equiseg_mm.visualization import visualize_modalities
        dataset = runner.test_dataloader.dataset
        panels = visualize_modalities(runner.model, dataset,
                                      os.path.join(runner.log_dir, 'vis_modalities'),
                                      indices=spread_indices(dataset, num_panels))
        panels_dir = os.path.dirname(panels[0]) if panels else None
    return dict(metrics={k: float(v) for k, v in metrics.items()}, train_s=train_s,
                test_s=test_s, work_dir=work_dir, log_dir=runner.log_dir, panels_dir=panels_dir,
                max_iters=cfg.train_cfg.max_iters)

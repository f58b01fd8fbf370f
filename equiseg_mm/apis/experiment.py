"""Train one config and evaluate it with the robustness loop: the unit of work of the demo
(``tools/run_demo.py``) and of the multi-seed sweeps (``tools/sweep.py``)."""
import logging
import os
import sys
import time
from typing import Optional, Sequence

from mmengine.config import Config

from .config_utils import check_amp_device, prepare_config, runner_from_config


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
        from ..visualization import visualize_modalities
        dataset = runner.test_dataloader.dataset
        panels = visualize_modalities(runner.model, dataset,
                                      os.path.join(runner.log_dir, 'vis_modalities'),
                                      indices=spread_indices(dataset, num_panels))
        panels_dir = os.path.dirname(panels[0]) if panels else None
    return dict(metrics={k: float(v) for k, v in metrics.items()}, train_s=train_s,
                test_s=test_s, work_dir=work_dir, log_dir=runner.log_dir, panels_dir=panels_dir,
                max_iters=cfg.train_cfg.max_iters)

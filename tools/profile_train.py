"""Where one training iteration's time goes: data, preprocessor, each model part's forward, the
backward pass and the optimiser step, measured on the config's own dataloader and optimiser.

    python tools/profile_train.py configs/equiseg/equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py \\
        [--iters 10] [--warmup 3] [--cfg-options KEY=VALUE ...]

Forward times of the parts (backbone, neck, decode head, auxiliary head) are wall-clock times
around each part's ``forward`` (CPU: the work is synchronous); "backward" is the whole
backward pass (autograd does not split it by part without a profiler), "optimiser" the step and
zeroing; "data" is loading and augmenting one batch in the main process (the config's
dataloader workers hide it in a real run). Means over ``--iters`` iterations after ``--warmup``
untimed ones.
"""
import argparse
import os.path as osp
import time
from collections import defaultdict

import _common  # noqa: F401,I001  (first: EQUISEG_COMPAT=all, quiet stack warnings)
import torch
from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Time breakdown of training iterations')
    parser.add_argument('config')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--data-root', default=None, help='overrides the dataloaders\' data_root')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file {args.config!r} does not exist')
    if args.iters < 1 or args.warmup < 0:
        parser.error('--iters must be >= 1 and --warmup >= 0')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import equiseg_mm  # noqa: F401
    from _runner import build_quiet_runner, check_amp_device, prepare_config
    # batches are loaded in this process (no workers), so the "data" row is the loading cost
    # that the config's workers hide in a real run
    options = {'train_dataloader.num_workers': 0, 'train_dataloader.persistent_workers': False}
    options.update(args.cfg_options)
    if args.data_root:
        for loader in ('train', 'val', 'test'):
            options[f'{loader}_dataloader.dataset.data_root'] = args.data_root
    cfg = prepare_config(args.config, work_dir=osp.join('work_dirs', 'profile_train'),
                         cfg_options=options)
    check_amp_device(cfg)
    runner = build_quiet_runner(cfg)
    model, optim = runner.model, runner.build_optim_wrapper(runner.optim_wrapper)
    model.train()
    times = defaultdict(float)

    def timed(name, forward):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = forward(*args, **kwargs)
            times[name] += time.perf_counter() - start
            return out
        return wrapper

    parts = [p for p in ('backbone', 'neck', 'decode_head', 'auxiliary_head')
             if getattr(model, p, None) is not None]
    for part in parts:  # the instance's forward: mmseg's heads call self.forward directly
        module = getattr(model, part)
        module.forward = timed(part, module.forward)
    loader = iter(runner.train_dataloader)
    total_iters = args.warmup + args.iters
    for i in range(total_iters):
        if i == args.warmup:
            times.clear()
        t0 = time.perf_counter()
        try:
            batch = next(loader)
        except StopIteration:  # one epoch's worth of batches: start again, as mmengine's loop
            loader = iter(runner.train_dataloader)
            batch = next(loader)
        t1 = time.perf_counter()
        data = model.data_preprocessor(batch, training=True)
        t2 = time.perf_counter()
        losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        t3 = time.perf_counter()
        optim.backward(loss)
        t4 = time.perf_counter()
        optim.step()
        optim.zero_grad()
        t5 = time.perf_counter()
        for key, value in (('data', t1 - t0), ('preprocessor', t2 - t1), ('forward', t3 - t2),
                           ('backward', t4 - t3), ('optimiser', t5 - t4), ('total', t5 - t0)):
            times[key] += value
    mean = {k: v / args.iters for k, v in times.items()}
    rows = ['data', 'preprocessor', 'forward'] + [f'  {p}' for p in parts] + \
        ['  losses, SGM, rest', 'backward', 'optimiser']
    mean['  losses, SGM, rest'] = mean['forward'] - sum(mean[p] for p in parts)
    print(f'{osp.basename(args.config)}: batch {cfg.train_dataloader.batch_size}, '
          f'{torch.get_num_threads()} threads, mean of {args.iters} iterations')
    for row in rows:
        key = row.strip() if row.strip() in mean else row
        value = mean[key]
        print(f'{row:<20}{value * 1000:9.1f} ms {100 * value / mean["total"]:6.1f}%')
    print(f'{"total":<20}{mean["total"] * 1000:9.1f} ms')
    return mean


if __name__ == '__main__':
    main()

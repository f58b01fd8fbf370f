"""Latency, size and FLOPs of the models of several configs, timed interleaved in one process;
with ``--train``, the time and memory of a training iteration with and without the memory levers.

    python tools/analysis_tools/benchmark.py CONFIG [CONFIG ...] [--sizes 512 1024]
        [--repeats 10] [--warmup 2] [--batch 1] [--threads N] [--device cpu|cuda]
        [--train-repeats 0] [--out FILE.json] [--cfg-options KEY=VALUE ...]
    python tools/analysis_tools/benchmark.py CONFIG [CONFIG ...] --train [--crop 512 [512]]
        [--batch 2] [--with-cp] [--amp fp16|bf16] [--repeats 10] [--warmup 2] ...

Each model is built from its config with random weights (no pretrained ``init_cfg``, SyncBN
built as BN); ``--cfg-options`` apply to every config. At each square size every model gets the
same random input (a model with fewer input channels gets the first ones) and, after the
warm-up, the timed runs go round robin (A, B, A, B, ...), so that load drift hits all models
alike. Measured per model and size:

* inference latency of ``model(inputs, mode='tensor')``, batch ``--batch``, ``torch.no_grad``:
  median, min and max of ``--repeats`` runs, and the ratio to the first config's model;
* parameters and FLOPs of one image's inference path with
  ``complexity()`` of ``tools/_complexity.py`` (mmengine's counter: one multiply-add is one
  FLOP; scaled-dot-product attention and average pooling counted; element-wise operators not);
* peak memory of one more forward: on CUDA ``max_memory_allocated`` above the memory allocated
  before it; on CPU the growth of the resident set (``VmHWM`` reset through
  ``/proc/self/clear_refs``), a lower bound: memory the allocator kept from earlier runs is
  reused without growing it (often 0 at small sizes);
* with ``--train-repeats N``: N timed ``train_step`` calls (preprocessing, loss, backward, AdamW
  step, batch ``--batch``) on a copy of each model, after one untimed call.

Training mode (``--train``): per config, one training iteration (``train_step``: data
preprocessing, forward and loss, backward, AdamW step) on a random batch of ``--batch`` images
of ``--crop`` size, for the config as it is and for each memory lever asked for:
``--with-cp`` (activation checkpointing: ``with_cp=True`` on the backbone, or on its
``branch``, and on a ``CMTBNeck``), ``--amp`` (mixed precision: mmengine's ``AmpOptimWrapper``
with that dtype on a GPU; on the CPU, which mmengine's wrapper refuses, the same autocast
without loss scaling) and both together. The variants of one config are timed interleaved
(``--warmup`` untimed, then ``--repeats`` rounds) on one device, then measured for:

* seconds per iteration: median, min and max;
* peak memory of one more iteration above the memory in use before it (which holds the
  weights and the optimizer state, reported apart as ``state_bytes``: parameters plus AdamW's
  two moments): on CUDA from the allocator's peak (``max_memory_allocated``), on the CPU from
  the growth of the process's peak resident set (``VmHWM``), as for inference.

glibc's ``MALLOC_*`` environment variables change whether freed memory is reused or returned
to the system, and with it CPU latency and memory: e.g. ``MALLOC_MMAP_THRESHOLD_=65536`` maps
every large buffer on its own, so the CPU peak follows the live tensors (at a cost in latency).
"""
import argparse
import contextlib
import copy
import gc
import json
import os
import os.path as osp
import platform
import re
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/
from _common import cpu_name  # noqa: E402,I001  (first: EQUISEG_COMPAT=all, quiet warnings)
import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402
from mmengine.optim import AmpOptimWrapper, OptimWrapper  # noqa: E402

import equiseg_mm  # noqa: E402,F401  (registration before mmseg.models)
from _complexity import (build_segmentor, complexity,  # noqa: E402
                                         input_channels, load_model_cfg)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Inference latency (interleaved), parameters, FLOPs, peak memory and '
        'optionally a training iteration of the models of several configs, with ratios to '
        'the first.')
    parser.add_argument('configs', nargs='+', metavar='CONFIG', help='config files')
    parser.add_argument('--sizes', type=int, nargs='+', default=[512, 1024],
                        help='square input sizes, multiples of 32. Default 512 1024')
    parser.add_argument('--repeats', type=int, default=10, help='timed runs. Default 10')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs first. Default 2')
    parser.add_argument('--batch', type=int, default=1, help='batch size. Default 1')
    parser.add_argument('--threads', type=int, default=None,
                        help="torch's CPU threads. Default: torch's default")
    parser.add_argument('--device', default=None,
                        help='cpu or cuda[:i]. Default cuda when available, else cpu')
    parser.add_argument('--train-repeats', type=int, default=0,
                        help='timed training iterations (0: none). Default 0')
    parser.add_argument('--train', action='store_true',
                        help='measure training iterations (time, peak memory) instead of '
                        'inference, with and without the memory levers below')
    parser.add_argument('--crop', type=int, nargs='+', default=[512], metavar='SIZE',
                        help='--train: crop H [W], multiples of 32. Default 512')
    parser.add_argument('--with-cp', action='store_true',
                        help='--train: also with activation checkpointing (backbone, neck)')
    parser.add_argument('--amp', choices=sorted(AMP_DTYPES), default=None,
                        help='--train: also with mixed precision of this dtype')
    parser.add_argument('--out', default=None, help='write the results as JSON here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='override settings of every config, e.g. model.fast_path=False')
    args = parser.parse_args(argv)
    for config in args.configs:
        if not osp.isfile(config):
            parser.error(f'config file {config!r} does not exist')
    if any(s < 32 or s % 32 for s in args.sizes):
        parser.error(f'--sizes must be multiples of 32, got {args.sizes}')
    if min(args.repeats, args.batch, args.threads or 1) < 1 or args.warmup < 0 \
            or args.train_repeats < 0:
        parser.error('--repeats, --batch, --threads must be >= 1; --warmup, --train-repeats >= 0')
    if not args.train and (args.with_cp or args.amp):
        parser.error('--with-cp and --amp are training levers: give them with --train')
    if len(args.crop) == 1:
        args.crop = args.crop * 2
    if len(args.crop) != 2 or any(s < 32 or s % 32 for s in args.crop):
        parser.error(f'--crop takes H [W], multiples of 32, got {args.crop}')
    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: CUDA is not available')
    labels = [label(c, args.cfg_options) for c in args.configs]
    if len(set(labels)) != len(labels):
        parser.error(f'a config is given twice: {args.configs}')
    return args


def label(config: str, cfg_options: Optional[dict] = None) -> str:
    """The row name: the config's file name without ``.py``, then the ``--cfg-options``."""
    options = ' '.join(f'{k}={v}' for k, v in (cfg_options or {}).items())
    return ' '.join([osp.splitext(osp.basename(config))[0]] + ([options] if options else []))


#: --amp choices: the dtype names of mmengine's AmpOptimWrapper
AMP_DTYPES = {'fp16': 'float16', 'bf16': 'bfloat16'}


def build_model(config: str, cfg_options: Optional[dict], device: str,
                with_cp: bool = False) -> torch.nn.Module:
    """The config's model in eval mode, random weights (seed 0), on ``device``.

    Pretrained ``init_cfg`` / ``pretrained`` entries are dropped (also those of a backbone's
    ``branch``); the data preprocessor pads to a multiple of 32 instead of a fixed size. With
    ``with_cp``, activation checkpointing is switched on (:func:`enable_checkpointing`).
    """
    cfg = load_model_cfg(config, cfg_options=cfg_options)
    for part in (cfg.backbone, cfg.backbone.get('branch')):
        if isinstance(part, dict):
            part.pop('init_cfg', None)
            part.pop('pretrained', None)
    if isinstance(cfg.get('data_preprocessor'), dict):
        cfg.data_preprocessor.update(size=None, size_divisor=32)
    if with_cp:
        enable_checkpointing(cfg)
    torch.manual_seed(0)
    return build_segmentor(cfg).to(device)


def enable_checkpointing(cfg) -> None:
    """Set ``with_cp=True`` in a model config: on the backbone's ``branch`` when it has one
    (mmseg's and mmpretrain's backbones take ``with_cp``), else on the backbone, and on a
    ``CMTBNeck``."""
    backbone = cfg.backbone
    target = backbone.branch if isinstance(backbone.get('branch'), dict) else backbone
    target.with_cp = True
    neck = cfg.get('neck')
    if isinstance(neck, dict) and str(neck.get('type', '')).split('.')[-1] == 'CMTBNeck':
        neck.with_cp = True


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize(device)


def _timer(fn: Callable[[], object], device: str) -> Callable[[], float]:
    def run() -> float:
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - start
    return run


def interleaved(tasks: Dict[str, Callable[[], float]], warmup: int,
                repeats: int) -> Dict[str, List[float]]:
    """Run every task ``warmup`` times, then ``repeats`` rounds of all tasks in turn; the
    times the tasks return, per task."""
    for task in tasks.values():
        for _ in range(warmup):
            task()
    times = {name: [] for name in tasks}
    for _ in range(repeats):
        for name, task in tasks.items():
            times[name].append(task())
    return times


def _stats(times: List[float]) -> Dict:
    return dict(median=statistics.median(times), min=min(times), max=max(times), runs=times)


def _rss_status() -> Dict[str, int]:
    with open('/proc/self/status') as f:
        return {k: int(v) * 1024 for k, v in re.findall(r'(VmRSS|VmHWM):\s+(\d+) kB', f.read())}


def peak_memory(forward: Callable[[], object], device: str) -> Optional[int]:
    """Bytes one call of ``forward`` needs above what was allocated before it (see the module
    docstring); None where the CPU peak cannot be reset."""
    gc.collect()
    if device.startswith('cuda'):
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        forward()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM to VmRSS
        before = _rss_status()['VmRSS']
        forward()
        return max(_rss_status()['VmHWM'] - before, 0)
    except (OSError, KeyError):
        return None


def _train_batch(channels: int, size, batch: int, num_classes: int, device: str) -> Dict:
    """A ``train_step`` batch: random uint8 images (seed 0) and labels of ``size`` ((H, W) or
    one int)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    h, w = (size, size) if isinstance(size, int) else size
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (channels, h, w), dtype=torch.uint8,
                                    generator=gen).to(device))
        sample = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(
            0, num_classes, (1, h, w), generator=gen).to(device)))
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _optim_wrapper(model: torch.nn.Module, device: str, amp: Optional[str] = None):
    """AdamW (lr 6e-5, weight decay 0.01, as the configs) in mmengine's ``OptimWrapper``; with
    ``amp`` ('fp16' or 'bf16') its ``AmpOptimWrapper`` on a GPU, on the CPU an
    ``OptimWrapper`` that runs the forward under the CPU's autocast (no loss scaling)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)
    if amp is None:
        return OptimWrapper(optimizer)
    if not device.startswith('cpu'):
        return AmpOptimWrapper(optimizer=optimizer, dtype=AMP_DTYPES[amp])
    return CPUAutocastOptimWrapper(optimizer, getattr(torch, AMP_DTYPES[amp]))


class CPUAutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward context is the CPU's autocast to ``dtype`` (what
    ``AmpOptimWrapper`` does on a GPU, without its loss scaler)."""

    def __init__(self, optimizer: torch.optim.Optimizer, dtype: torch.dtype) -> None:
        super().__init__(optimizer)
        self.cast_dtype = dtype

    @contextlib.contextmanager
    def optim_context(self, model: torch.nn.Module):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


def _train_task(model: torch.nn.Module, size, batch: int, device: str,
                amp: Optional[str] = None, copy_model: bool = True):
    """A timed ``train_step`` of ``model`` (a copy unless ``copy_model=False``) on a random
    batch of ``size`` ((H, W) or one int): the timed step and the bare step."""
    model = (copy.deepcopy(model) if copy_model else model).train()
    optim = _optim_wrapper(model, device, amp)
    data = _train_batch(input_channels(model), size, batch, model.decode_head.num_classes,
                        device)
    step = lambda: model.train_step(data, optim)  # noqa: E731
    return _timer(step, device), step


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or not b else a / b


def benchmark(models: Dict[str, torch.nn.Module], size: int, args: argparse.Namespace) -> Dict:
    """Every measurement at one size; per model label, a JSON-ready dict."""
    device = args.device
    rows = {name: dict(params=info['params'], flops=info['flops'])
            for name, info in ((n, complexity(m, (size, size))) for n, m in models.items())}
    gen = torch.Generator().manual_seed(0)
    channels = {name: input_channels(m) for name, m in models.items()}
    x = torch.randn(args.batch, max(channels.values()), size, size, generator=gen)
    inputs = {name: x[:, :c].contiguous().to(device) for name, c in channels.items()}
    forwards = {name: (lambda m=m, x=inputs[name]: m(x, mode='tensor'))
                for name, m in models.items()}
    with torch.no_grad():
        times = interleaved({n: _timer(f, device) for n, f in forwards.items()}, args.warmup,
                            args.repeats)
        for name, forward in forwards.items():
            rows[name].update(latency_s=_stats(times[name]),
                              peak_memory_bytes=peak_memory(forward, device))
    if args.train_repeats:
        tasks = {n: _train_task(m, size, args.batch, device)[0] for n, m in models.items()}
        times = interleaved(tasks, 1, args.train_repeats)
        for name in models:
            rows[name]['train_iter_s'] = _stats(times[name])
    first = next(iter(rows.values()))
    for row in rows.values():
        row['ratio'] = dict(
            latency=_ratio(row['latency_s']['median'], first['latency_s']['median']),
            flops=_ratio(row['flops'], first['flops']),
            params=_ratio(row['params'], first['params']),
            peak_memory=_ratio(row['peak_memory_bytes'], first['peak_memory_bytes']),
            train_iter=_ratio(row.get('train_iter_s', {}).get('median'),
                              first.get('train_iter_s', {}).get('median')))
    return rows


def lever_variants(with_cp: bool, amp: Optional[str]) -> List[Dict]:
    """The variants of a config in training mode: as configured, then each lever asked for,
    then all of them together."""
    levers = ([dict(with_cp=True, amp=None)] if with_cp else []) + \
        ([dict(with_cp=False, amp=amp)] if amp else [])
    if len(levers) > 1:
        levers.append(dict(with_cp=True, amp=amp))
    return [dict(with_cp=False, amp=None)] + levers


def variant_label(variant: Dict) -> str:
    """'plain', 'with_cp', 'amp bf16' or 'with_cp + amp bf16'."""
    parts = (['with_cp'] if variant['with_cp'] else []) + \
        ([f'amp {variant["amp"]}'] if variant['amp'] else [])
    return ' + '.join(parts) or 'plain'


def _state_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters and AdamW's two moments of each trainable parameter."""
    return sum(p.numel() * p.element_size() * (3 if p.requires_grad else 1)
               for p in model.parameters())


def train_benchmark(config: str, args: argparse.Namespace) -> Dict:
    """Training iterations of one config's variants (see the module docstring); per variant
    label, a JSON-ready dict."""
    device, name = args.device, label(config, args.cfg_options)
    variants = lever_variants(args.with_cp, args.amp)
    tasks, steps, rows = {}, {}, {}
    for variant in variants:
        key = f'{name} [{variant_label(variant)}]'
        model = build_model(config, args.cfg_options, device, with_cp=variant['with_cp'])
        tasks[key], steps[key] = _train_task(model, tuple(args.crop), args.batch, device,
                                             amp=variant['amp'], copy_model=False)
        params = sum(p.numel() for p in model.parameters())
        rows[key] = dict(config=config, **variant, params=params,
                         state_bytes=_state_bytes(model))
        del model
    times = interleaved(tasks, args.warmup, args.repeats)
    for key, step in steps.items():
        rows[key].update(train_iter_s=_stats(times[key]),
                         peak_memory_bytes=peak_memory(step, device))
    plain = rows[f'{name} [plain]']
    for row in rows.values():
        row['ratio'] = dict(
            train_iter=_ratio(row['train_iter_s']['median'], plain['train_iter_s']['median']),
            peak_memory=_ratio(row['peak_memory_bytes'], plain['peak_memory_bytes']))
    del tasks, steps
    gc.collect()
    if device.startswith('cuda'):
        torch.cuda.empty_cache()
    return rows


def format_train_table(result: Dict) -> str:
    """One table of every config's variants; ratios are to the config's plain row."""
    settings = result['settings']
    rows = result['results']
    width = max(len(name) for name in rows) + 2
    h, w = settings['crop']
    lines = [f'\ntraining iteration, crop {h}x{w}, batch {settings["batch"]}, '
             f'{result["machine"]["device"]}, {result["machine"]["threads"]} threads, '
             f'{settings["repeats"]} runs',
             f'{"model [levers]":<{width}}{"params M":>9}{"s/iter":>9}{"(min-max)":>15}'
             f'{"x plain":>9}{"peak MB":>9}{"x plain":>9}{"state MB":>10}']
    for name, row in rows.items():
        it, mem = row['train_iter_s'], row['peak_memory_bytes']
        span = f'({it["min"]:.2f}-{it["max"]:.2f})'
        lines.append(
            f'{name:<{width}}{row["params"] / 1e6:9.2f}{it["median"]:9.2f}{span:>15}'
            f'{_fmt(row["ratio"]["train_iter"], ".2f"):>9}'
            f'{_fmt(mem and mem / 2**20, ".0f"):>9}'
            f'{_fmt(row["ratio"]["peak_memory"], ".2f"):>9}'
            f'{row["state_bytes"] / 2**20:10.0f}')
    where = 'CUDA max_memory_allocated' if result['machine']['device'].startswith('cuda') \
        else 'growth of the peak resident set (VmHWM)'
    return '\n'.join(lines + [
        f'\npeak MB: one iteration above the memory in use before it ({where}); state MB: '
        'parameters + AdamW moments, resident before and after.'])


def machine_info(device: str) -> Dict:
    """The CPU (model, vector unit, cores), threads, device and library versions."""
    import mmengine
    import mmseg
    info = dict(cpu=cpu_name(), cores=os.cpu_count(),
                usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                else os.cpu_count(), threads=torch.get_num_threads(), device=device,
                torch=torch.__version__, mmseg=mmseg.__version__, mmengine=mmengine.__version__,
                python=platform.python_version())
    if device.startswith('cuda'):
        info['gpu'] = torch.cuda.get_device_name(torch.device(device))
    return info


def _fmt(value: Optional[float], spec: str) -> str:
    return '-' if value is None else format(value, spec)


def format_table(result: Dict) -> str:
    """One table per size; ratios are to the first row."""
    settings, lines = result['settings'], []
    for size, rows in result['results'].items():
        width = max(len(name) for name in rows) + 2
        lines += [f'\n{size}x{size}, batch {settings["batch"]}, {result["machine"]["device"]}, '
                  f'{result["machine"]["threads"]} threads, {settings["repeats"]} runs',
                  f'{"model":<{width}}{"params M":>9}{"GFLOPs":>9}{"ms median":>11}'
                  f'{"(min-max)":>15}{"x first":>9}{"train s":>9}{"peak MB":>9}']
        for name, row in rows.items():
            lat, mem = row['latency_s'], row['peak_memory_bytes']
            span = f'({lat["min"] * 1e3:.0f}-{lat["max"] * 1e3:.0f})'
            lines.append(
                f'{name:<{width}}{row["params"] / 1e6:9.2f}{row["flops"] / 1e9:9.2f}'
                f'{lat["median"] * 1e3:11.1f}{span:>15}'
                f'{_fmt(row["ratio"]["latency"], ".2f"):>9}'
                f'{_fmt(row.get("train_iter_s", {}).get("median"), ".3f"):>9}'
                f'{_fmt(mem and mem / 2**20, ".0f"):>9}')
    return '\n'.join(lines + ['\nFLOPs: 1 multiply-add = 1 FLOP, one image, element-wise '
                              'operators not counted (tools/_complexity.py).'])


def main(argv=None) -> Dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.train:
        return _main_train(args)
    models = {label(c, args.cfg_options): build_model(c, args.cfg_options, args.device)
              for c in args.configs}
    result = dict(
        machine=machine_info(args.device),
        settings=dict(configs=args.configs, cfg_options=args.cfg_options or {},
                      sizes=args.sizes, repeats=args.repeats, warmup=args.warmup,
                      batch=args.batch, train_repeats=args.train_repeats),
        results={str(size): benchmark(models, size, args) for size in args.sizes})
    print(format_table(result))
    _write(result, args.out)
    return result


def _main_train(args: argparse.Namespace) -> Dict:
    results = {}
    for config in args.configs:  # one config's variants in memory at a time
        results.update(train_benchmark(config, args))
    result = dict(
        machine=machine_info(args.device),
        settings=dict(mode='train', configs=args.configs, cfg_options=args.cfg_options or {},
                      crop=list(args.crop), batch=args.batch, repeats=args.repeats,
                      warmup=args.warmup, with_cp=args.with_cp, amp=args.amp,
                      malloc_mmap_threshold=os.environ.get('MALLOC_MMAP_THRESHOLD_')),
        results=results)
    print(format_train_table(result))
    _write(result, args.out)
    return result


def _write(result: Dict, out: Optional[str]) -> None:
    if out:
        os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
        with open(out, 'w') as f:
            json.dump(result, f, indent=1)
        print(f'wrote {out}')


if __name__ == '__main__':
    main()

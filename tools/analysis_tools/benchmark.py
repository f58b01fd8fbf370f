"""Speed, size and memory of EQUISeg-B0 against SegFormer-B0 baselines, interleaved in one process.

    python tools/analysis_tools/benchmark.py [--sizes 512 1024] [--repeats 10] [--warmup 2]
        [--threads 2]
        [--train-repeats 3] [--models equiseg-b0 segformer-b0 segformer-b0-fast segformer-b0-cl
                  earlyfusion-b0]
        [--device cpu|cuda] [--data-root DIR] [--out benchmark.json] [--quick] [--no-memory]
        [--cfg-options model.neck.aux_summary=per_primary ...]  # EQUISeg variants
        [--malloc-keep]                                      # glibc keeps freed memory
    python tools/analysis_tools/benchmark.py --profile [--sizes 512]  # where EQUISeg-B0's time goes

Models (25 classes, a 256-channel SegFormer all-MLP head, SyncBN built as BN):

* ``equiseg-b0``: EQUISeg-B0 on RGB-D-E-L, built from ``--config`` (default
  ``configs/equiseg/equiseg_mit-b0_8xb2-160k_deliver-rgbdel-1024x1024.py``) without the
  pretrained ``init_cfg``; branch and neck attention without attention maps (its default); its
  head is ``FastSegformerHead`` (mmseg's ``SegformerHead`` computed in a cheaper order, same
  outputs).
* ``equiseg-b0-stockhead``: the same with mmseg's ``SegformerHead`` (same outputs).
* ``equiseg-b0-light``: the lightest CMTB measured: no self-attention step at any stage,
  cross-attention keys average-pooled to 8 x 8 (``cross_kv_grids``); lower accuracy (README).
* ``equiseg-b0-paper``: the paper's CMTB on every stage (``self_attn=True``,
  ``aux_summary='per_primary'``, ``cross_sr_ratios=None``), the shipped head.
* ``segformer-b0``: mmseg's own SegFormer-B0 on RGB (stock ``MixVisionTransformer`` +
  ``SegformerHead``, mmseg's ``segformer_mit-b0`` settings), stock attention: mmseg calls
  ``nn.MultiheadAttention`` with ``need_weights=True``, so every attention map is materialised.
* ``segformer-b0-fast``: the same with ``use_fast_attention`` (attention maps not computed; the
  "attention weights off" SegFormer of the project's performance targets).
* ``segformer-b0-cl``: the same with both of EQUISeg's speed switches for MiT (same outputs):
  ``use_fast_attention`` and ``use_channels_last`` (MiT's maps with regular channels-last
  strides, so oneDNN's convolutions run without layout reorders at batch 1): the baseline of
  the project's performance target (stock ``SegformerHead``).
* ``segformer-b0-fh``: ``segformer-b0-cl`` with EQUISeg's ``FastSegformerHead``: the fastest
  single-branch model known here (for comparison; the target's baseline stays
  ``segformer-b0-cl``).
* ``earlyfusion-b0``: one MiT-B0 over the 12 stacked RGB-D-E-L channels, mmseg's head, both
  MiT switches (as EQUISeg's branches).

Layout note: at batch 1, stock MiT's maps are channels-last views with an irregular batch
stride, on which oneDNN reorders the data around every convolution (MixFFN, spatial reduction,
patch embedding) and mmseg's ``SegformerHead`` runs about 25% slower and with ~190 MB more
memory at 1024 x 1024. ``segformer-b0`` and ``segformer-b0-fast`` are measured with mmseg's
layout; ``segformer-b0-cl``, ``earlyfusion-b0`` and EQUISeg's branches and neck use regular
strides.

Allocator note: with glibc's default settings, large freed buffers go back to the operating
system and every new one is page-faulted in again; at 1024 x 1024 that is about 0.8 s of
system time per EQUISeg-B0 forward and 1.7 s per stock SegFormer-B0 forward (whose discarded
attention maps are 268 MB per layer) on the project's 2-core CPU (``system_s``). ``--malloc-keep`` makes glibc
keep freed memory for reuse (``mallopt``: mmap threshold 1 GB, trim threshold 2 GB, top pad
1 GB; for any command the environment variables ``MALLOC_MMAP_THRESHOLD_=1073741824
MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=1073741824`` do the same) for the whole run;
the default measures the process as users start it.

Measured, for every size in ``--sizes`` and every model, on the same input:

* **parameters** and **FLOPs** of the inference path (backbone + neck + decode head) with
  mmengine's ``FlopAnalyzer`` as in ``tools/analysis_tools/get_flops.py``: 1 multiply-add = 1 FLOP; every
  branch is traced; scaled-dot-product attention and average pooling are counted by handles
  added there; element-wise ops (add, mul, sigmoid, GELU, softmax), reductions/selections (sum,
  max, topk, where) and layout copies are *not* counted.
* **inference latency**, batch ``--batch`` (1), ``torch.no_grad``: ``--warmup`` runs, then
  ``--repeats`` runs; median, min and max; also the median system (kernel) CPU time per run
  (``system_s``: page faults, mostly). On CUDA also images/s without and with AMP (fp16
  autocast).
* **one training iteration**, batch ``--train-batch`` (2), ``model.train_step`` on a copy of
  the model (data preprocessor, loss mode with every head, backward, AdamW step): one warm-up,
  then ``--train-repeats`` (3), interleaved as well.
* **peak forward memory**: in a fresh subprocess per model and size. On CPU: the process's peak
  resident set size (``VmHWM`` in ``/proc/self/status``) during one forward minus its resident
  size just before it. The subprocess runs with glibc's ``MALLOC_MMAP_THRESHOLD_=65536`` so that
  every tensor buffer is mapped and unmapped on its own (resident size then follows the live
  tensors instead of the allocator's cache); one warm-up forward runs first and the peak is
  reset by writing ``5`` to ``/proc/self/clear_refs`` (where that is refused, the first forward is
  measured instead, with the method named in the JSON). On CUDA: ``max_memory_allocated`` minus
  ``memory_allocated`` before the forward.

Timings are interleaved: at each size every model gets its warm-up, then the repeats run round
robin (A, B, C, A, B, C, ...) so that load drift and thermal changes hit all models alike; the
order is recorded under ``schedule``. Also measured once: **dataloader throughput**, samples/s of
one worker (the train pipeline of the synthetic config, run in this process), on ``--data-root``
or on a small synthetic dataset written to a temporary folder.

The table gives ratios to SegFormer-B0 (stock, weights off, weights off + channels-last):
GFLOPs, latency, latency/FLOPs (latency ratio divided by FLOPs ratio: above 1 means fewer FLOPs
per second than the baseline), training-iteration time and peak memory. ``--out`` writes all of
it with machine information (CPU model, cores, threads, versions) as JSON.
"""
import argparse
import copy
import gc
import json
import os
import os.path as osp
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import OrderedDict
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence

import torch
from mmengine.config import DictAction

import equiseg_mm  # noqa: F401  (compat fixes and registration before mmseg.models)
from equiseg_mm.models.utils import use_channels_last, use_fast_attention
from equiseg_mm.utils.complexity import (TensorModeModel, build_segmentor, complexity,
                                         input_channels, load_model_cfg)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'equiseg',
                          'equiseg_mit-b0_8xb2-160k_deliver-rgbdel-1024x1024.py')
SYNTHETIC_CONFIG = osp.join(ROOT, 'configs', 'equiseg',
                            'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
MODALITIES = ('rgb', 'depth', 'event', 'lidar')
NUM_CLASSES = 25
BASELINES = ('segformer-b0', 'segformer-b0-fast', 'segformer-b0-cl')
MODEL_NAMES = ('equiseg-b0', 'equiseg-b0-stockhead', 'equiseg-b0-light', 'equiseg-b0-paper',
               'segformer-b0', 'segformer-b0-fast', 'segformer-b0-cl', 'segformer-b0-fh',
               'earlyfusion-b0')
LABELS = {
    'equiseg-b0': 'EQUISeg-B0 (RGB-D-E-L)',
    'equiseg-b0-stockhead': "EQUISeg-B0, mmseg's head",
    'equiseg-b0-light': 'EQUISeg-B0, lightest neck',
    'equiseg-b0-paper': "EQUISeg-B0, paper's CMTB",
    'segformer-b0': 'SegFormer-B0 (RGB, stock)',
    'segformer-b0-fast': 'SegFormer-B0 (RGB, weights off)',
    'segformer-b0-cl': 'SegFormer-B0 (RGB, w-off + cl)',
    'segformer-b0-fh': 'SegFormer-B0 (w-off+cl+fast head)',
    'earlyfusion-b0': 'Early-fusion MiT-B0 (12 ch)',
}
#: EQUISeg variants: the ``--config`` model with these overrides (before ``--cfg-options``)
EQUISEG_VARIANTS = {
    'equiseg-b0': {},
    # the same with mmseg's SegformerHead (the shipped model before FastSegformerHead)
    'equiseg-b0-stockhead': {'model.decode_head.type': 'SegformerHead'},
    # the lightest CMTB measured: no self-attention step at any stage, cross-attention keys
    # pooled to 8 x 8 (about 1 point lower full-modality mIoU on the synthetic job, README)
    'equiseg-b0-light': {'model.neck.self_attn': False, 'model.neck.cross_sr_ratios': None,
                         'model.neck.cross_kv_grids': [8, 8, 8, 8]},
    # the paper's CMTB: per-primary auxiliary summary, the self-attention's key reduction for
    # the cross-attention, self-attention on every stage (the head: the shipped one, which
    # computes mmseg's SegformerHead in a cheaper order)
    'equiseg-b0-paper': {'model.neck.self_attn': True, 'model.neck.aux_summary': 'per_primary',
                         'model.neck.cross_sr_ratios': None},
}
#: The target of the project's performance issue: EQUISeg-B0 at 1024 x 1024 at most this many
#: times the latency of SegFormer-B0 with attention weights off + channels-last maps.
TARGET = dict(model='equiseg-b0', baseline='segformer-b0-cl', size=1024, ratio=2.9)
#: baselines built with EQUISeg's MiT speed switches (``use_fast_attention``; and
#: ``use_channels_last``)
FAST_ATTENTION = ('segformer-b0-fast', 'segformer-b0-cl', 'segformer-b0-fh', 'earlyfusion-b0')
CHANNELS_LAST = ('segformer-b0-cl', 'segformer-b0-fh', 'earlyfusion-b0')
#: models ``--compile`` also times compiled
COMPILABLE = ('equiseg-b0', 'segformer-b0-cl')
MEMORY_METHOD = ('CPU: peak RSS (VmHWM) during one forward minus RSS before it, fresh '
                 'subprocess per model and size, MALLOC_MMAP_THRESHOLD_=65536, peak reset via '
                 '/proc/self/clear_refs after one warm-up forward; CUDA: max_memory_allocated '
                 'minus memory_allocated before the forward')
FLOP_METHOD = ('mmengine.analysis.FlopAnalyzer (fvcore counter), 1 multiply-add = 1 FLOP, '
               'inference path (backbone + neck + decode head), every branch traced; '
               'scaled_dot_product_attention (QK^T + AV) and avg_pool2d (k*k per output) counted '
               'by added handles; element-wise ops, reductions/selections and copies not counted')


def _segformer_cfg(in_channels: int, modalities: Optional[Sequence[str]] = None) -> dict:
    """mmseg's SegFormer-B0 (``segformer_mit-b0`` settings) with a 25-class, 256-channel head.

    The data preprocessor pads to a multiple of 32 (mmseg's needs a size rule for training).
    """
    if modalities is None:
        preprocessor = dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                            std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                            seg_pad_val=255, size_divisor=32)
    else:
        preprocessor = dict(type='MultiModalSegDataPreProcessor', modalities=list(modalities),
                            channels=[in_channels // len(modalities)] * len(modalities),
                            bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size_divisor=32)
    return dict(
        type='EncoderDecoder',
        data_preprocessor=preprocessor,
        backbone=dict(
            type='MixVisionTransformer', in_channels=in_channels, embed_dims=32, num_stages=4,
            num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8], patch_sizes=[7, 3, 3, 3],
            sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=4, qkv_bias=True,
            drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1),
        decode_head=dict(
            type='SegformerHead', in_channels=[32, 64, 160, 256], in_index=[0, 1, 2, 3],
            channels=256, dropout_ratio=0.1, num_classes=NUM_CLASSES,
            norm_cfg=dict(type='BN', requires_grad=True), align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))


def model_cfg(name: str, config: str = DEFAULT_CONFIG,
              cfg_options: Optional[dict] = None) -> dict:
    """The model config of one benchmark model (see the module docstring); ``cfg_options``
    apply to EQUISeg's config only."""
    if name in EQUISEG_VARIANTS:
        cfg = load_model_cfg(config, MODALITIES, {**EQUISEG_VARIANTS[name], **(cfg_options or {})})
        cfg.data_preprocessor.update(size=None, size_divisor=32)  # any benchmark size
        return cfg.to_dict()
    if name in ('segformer-b0', 'segformer-b0-fast', 'segformer-b0-cl'):
        return _segformer_cfg(3)
    if name == 'segformer-b0-fh':
        cfg = _segformer_cfg(3)
        cfg['decode_head']['type'] = 'FastSegformerHead'
        return cfg
    if name == 'earlyfusion-b0':
        return _segformer_cfg(3 * len(MODALITIES), MODALITIES)
    raise ValueError(f'unknown model {name!r}; choose from {list(MODEL_NAMES)}')


def build_model(name: str, config: str = DEFAULT_CONFIG, device: str = 'cpu',
                cfg_options: Optional[dict] = None) -> torch.nn.Module:
    """Build a benchmark model (eval mode, random weights, fixed seed) on ``device``."""
    torch.manual_seed(0)
    model = build_segmentor(model_cfg(name, config, cfg_options))
    if name in FAST_ATTENTION:
        use_fast_attention(model)
    if name in CHANNELS_LAST:
        use_channels_last(model)
    return model.to(device).eval()


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (see the module docstring). Returns whether every
    ``mallopt`` call succeeded (False where there is no glibc)."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(mallopt(option, value) == 1 for option, value in (
        (m_mmap_threshold, 2**30), (m_trim_threshold, 2**31 - 1),
        (m_top_pad, 2**30)))


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _stats(times: List[float]) -> Dict:
    return dict(median=statistics.median(times), min=min(times), max=max(times),
                runs=list(times))


def _train_batch(channels: int, size: int, batch: int, device: str) -> Dict:
    """A ``train_step`` batch: uint8 images and random labels (one ignored border row)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (channels, size, size), dtype=torch.uint8,
                                    generator=gen).to(device))
        label = torch.randint(0, NUM_CLASSES, (1, size, size), generator=gen)
        label[:, :1] = 255
        sample = SegDataSample(gt_sem_seg=PixelData(data=label.to(device)))
        sample.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size),
                                 pad_shape=(size, size)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _round_robin(names: Sequence[str], tasks: Dict[str, Callable[[], float]], warmup: int,
                 repeats: int, schedule: List, tag: str) -> Dict[str, List[float]]:
    """Warm every task up, then run the repeats interleaved; the timed order goes to
    ``schedule``."""
    for name in names:
        for _ in range(warmup):
            tasks[name]()
    times = {name: [] for name in names}
    for rep in range(repeats):
        for name in names:
            times[name].append(tasks[name]())
            schedule.append([tag, name, rep])
    return times


def measure_latency(models: Dict[str, torch.nn.Module], size: int, warmup: int, repeats: int,
                    batch: int = 1, device: str = 'cpu', amp: bool = False,
                    schedule: Optional[List] = None,
                    wrappers: Optional[Dict[str, Callable]] = None) -> Dict[str, Dict]:
    """Inference latency (seconds) of every model at ``size``, interleaved.

    ``wrappers`` maps a model name to the callable timed instead of its tensor-mode path (e.g. a
    ``torch.compile``-d one); the result's ``first_s`` is the time of the first call (for a
    compiled model: compilation plus one run).
    """
    schedule = [] if schedule is None else schedule
    wrappers = wrappers or {}
    tasks, system = {}, {name: [] for name in models}
    for name, model in models.items():
        # (no `or`: a compiled module refuses truth tests)
        wrapper = wrappers[name] if name in wrappers else TensorModeModel(model).eval()
        x = torch.randn(batch, input_channels(model), size, size, device=device)

        def run(wrapper=wrapper, x=x, system=system[name]):
            ctx = torch.autocast('cuda', dtype=torch.float16) if amp else nullcontext()
            _sync(device)
            sys_start = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            start = time.perf_counter()
            with torch.no_grad(), ctx:
                wrapper(x)
            _sync(device)
            elapsed = time.perf_counter() - start
            system.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys_start)
            return elapsed
        tasks[name] = run
    tag = f'latency{"-amp" if amp else ""}@{size}'
    first = {}
    for name in models:
        first[name] = tasks[name]()  # the first call (compilation for compiled wrappers)
    times = _round_robin(list(models), tasks, max(warmup - 1, 0), repeats, schedule, tag)
    # system (kernel) CPU time of the timed runs: page faults, mostly (see the allocator note)
    return {name: dict(_stats(t), first_s=first[name],
                       system_s=statistics.median(system[name][max(warmup, 1):]))
            for name, t in times.items()}


def measure_train_iter(models: Dict[str, torch.nn.Module], size: int, warmup: int,
                       repeats: int, batch: int = 2, device: str = 'cpu',
                       schedule: Optional[List] = None) -> Dict[str, Dict]:
    """Time of one ``train_step`` (preprocess, loss, backward, AdamW step), interleaved.

    The models are trained on copies, so the originals keep their weights and eval mode.
    """
    from mmengine.optim import OptimWrapper
    schedule = [] if schedule is None else schedule
    tasks = {}
    for name, model in models.items():
        train_model = copy.deepcopy(model).train()
        optim = OptimWrapper(torch.optim.AdamW(train_model.parameters(), lr=6e-5,
                                               weight_decay=0.01))
        data = _train_batch(input_channels(model), size, batch, device)

        def run(train_model=train_model, optim=optim, data=data):
            _sync(device)
            start = time.perf_counter()
            train_model.train_step(data, optim)
            _sync(device)
            return time.perf_counter() - start
        tasks[name] = run
    times = _round_robin(list(models), tasks, warmup, repeats, schedule, f'train@{size}')
    return {name: _stats(t) for name, t in times.items()}


def _proc_status() -> Dict[str, int]:
    """VmRSS / VmHWM of this process in bytes."""
    with open('/proc/self/status') as f:
        text = f.read()
    return {k: int(v) * 1024 for k, v in re.findall(r'(VmRSS|VmHWM):\s+(\d+) kB', text)}


def _reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def peak_memory_child(name: str, size: int, threads: int, device: str, config: str,
                      batch: int = 1, cfg_options: Optional[dict] = None) -> Dict:
    """Run in the memory subprocess: peak extra memory (bytes) of one forward."""
    torch.set_num_threads(threads)
    model = build_model(name, config, device, cfg_options)
    wrapper = TensorModeModel(model).eval()
    x = torch.randn(batch, input_channels(model), size, size, device=device)
    if device.startswith('cuda'):
        with torch.no_grad():
            wrapper(x)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        with torch.no_grad():
            wrapper(x)
        torch.cuda.synchronize()
        return dict(peak_bytes=torch.cuda.max_memory_allocated() - before,
                    method='cuda max_memory_allocated')
    status = _proc_status()
    method = 'VmHWM after clear_refs, warm-up forward first'
    if status.get('VmHWM') is None:
        raise RuntimeError('/proc/self/status has no VmHWM: peak memory needs Linux')
    with torch.no_grad():
        wrapper(x)
    gc.collect()
    if not _reset_peak_rss():
        method = 'VmHWM on a fresh process (clear_refs refused): model build peak may hide ' \
            'a smaller forward peak'
    before = _proc_status()['VmRSS']
    with torch.no_grad():
        wrapper(x)
    status = _proc_status()
    return dict(peak_bytes=max(status['VmHWM'] - before, 0), rss_before_bytes=before,
                hwm_bytes=status['VmHWM'], method=method)


def measure_peak_memory(name: str, size: int, threads: int, device: str,
                        config: str = DEFAULT_CONFIG, cfg_options: Optional[dict] = None,
                        batch: int = 1, timeout: float = 1800) -> Dict:
    """Peak forward memory of one model in a fresh subprocess (see the module docstring)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', PYTHONWARNINGS='ignore')
    cmd = [sys.executable, osp.abspath(__file__), '--memory-child', name, str(size),
           '--threads', str(threads), '--device', device, '--config', config,
           '--batch', str(batch), '--cfg-json', json.dumps(cfg_options or {})]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f'memory subprocess for {name} at {size} failed '
                           f'(exit {proc.returncode}):\n{proc.stderr[-3000:]}')
    return json.loads(lines[-1])


def dataloader_throughput(data_root: Optional[str], num_samples: int, warmup: int = 2) -> Dict:
    """Samples/s of one worker: the synthetic config's train pipeline, run in this process
    with one torch thread and OpenCV's threading off, as in a DataLoader worker under mmengine's
    default ``env_cfg``.

    Without ``data_root`` a small synthetic dataset (32 training frames, 96 x 128) is written to
    a temporary folder and removed afterwards.
    """
    import cv2
    from mmengine.config import Config
    from mmseg.registry import DATASETS
    from equiseg_mm.datasets import make_synthetic_deliver
    tmp, threads, cv2_threads = None, torch.get_num_threads(), cv2.getNumThreads()
    if data_root is None:
        tmp = tempfile.mkdtemp(prefix='equiseg_bench_')
        data_root = osp.join(tmp, 'synthetic_deliver')
        make_synthetic_deliver(data_root, num_train=32, num_val=1, num_test=1, seed=0)
    try:
        cfg = Config.fromfile(SYNTHETIC_CONFIG)
        dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
        dataset_cfg.data_root = data_root
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            dataset = DATASETS.build(dataset_cfg)
        torch.set_num_threads(1)
        cv2.setNumThreads(0)
        for i in range(warmup):
            dataset[i % len(dataset)]
        times = []
        for i in range(num_samples):
            start = time.perf_counter()
            dataset[(warmup + i) % len(dataset)]
            times.append(time.perf_counter() - start)
        sample = dataset[0]['inputs']
        return dict(samples_per_s_per_worker=len(times) / sum(times),
                    sample_time_s=_stats(times), num_samples=len(times),
                    dataset_size=len(dataset), sample_shape=list(sample.shape),
                    data_root=data_root if tmp is None else '(temporary synthetic dataset)',
                    pipeline=[t['type'] for t in dataset_cfg.pipeline])
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def machine_info(device: str) -> Dict:
    """CPU model, cores, threads, library versions (and the GPU on CUDA)."""
    cpu_model = platform.processor() or 'unknown'
    try:
        with open('/proc/cpuinfo') as f:
            found = re.search(r'^model name\s*:\s*(.+)$', f.read(), re.M)
        cpu_model = found.group(1).strip() if found else cpu_model
    except OSError:
        pass
    import mmengine
    import mmseg
    info = dict(cpu_model=cpu_model, logical_cores=os.cpu_count(),
                usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                else os.cpu_count(),
                torch_threads=torch.get_num_threads(), torch=torch.__version__,
                mmseg=mmseg.__version__, mmengine=mmengine.__version__,
                python=platform.python_version(), platform=platform.platform(),
                load_average=list(os.getloadavg()) if hasattr(os, 'getloadavg') else None,
                device=device)
    if device.startswith('cuda'):
        info['gpu'] = torch.cuda.get_device_name(torch.device(device))
    return info


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or not b else a / b


def compute_ratios(per_model: Dict[str, Dict]) -> Dict[str, Dict]:
    """Ratios of each model to each available baseline (GFLOPs, latency, latency/FLOPs,
    train iteration, peak memory)."""
    out = {}
    for name, res in per_model.items():
        out[name] = {}
        for base in BASELINES:
            if base not in per_model:
                continue
            ref = per_model[base]
            flops = _ratio(res['flops'], ref['flops'])
            latency = _ratio(res.get('latency_s', {}).get('median'),
                             ref.get('latency_s', {}).get('median'))
            out[name][base] = dict(
                flops=flops, latency=latency, latency_per_flops=_ratio(latency, flops),
                train_iter=_ratio(res.get('train_iter_s', {}).get('median'),
                                  ref.get('train_iter_s', {}).get('median')),
                peak_memory=_ratio(res.get('peak_memory_bytes'),
                                   ref.get('peak_memory_bytes')))
    return out


def _fmt(value: Optional[float], spec: str = '.2f') -> str:
    return '-' if value is None else format(value, spec)


def _size_blocks(run: Dict, labels: Dict[str, str]) -> List[str]:
    """One table per size of a run (results and ratios)."""
    lines = []
    settings = run['settings']
    for size, per_model in run['results'].items():
        lines.append(f'\n== {size}x{size}, batch {settings["batch"]} '
                     f'(train: batch {settings["train_batch"]}), {settings["threads"]} threads, '
                     f'{settings["device"]}, allocator: {settings.get("allocator", "default")}')
        lines.append(f'{"model":<40s}{"params M":>9s}{"GFLOPs":>9s}{"lat ms med":>11s}'
                     f'{"(min-max)":>17s}{"ms/GFLOP":>9s}{"train s":>9s}{"mem MB":>9s}')
        for name, res in per_model.items():
            lat = res.get('latency_s')
            gflops = res['flops'] / 1e9
            span = f'({lat["min"] * 1e3:.0f}-{lat["max"] * 1e3:.0f})' if lat else '-'
            mem = res.get('peak_memory_bytes')
            lines.append(
                f'{labels.get(name, name):<40s}{res["params"] / 1e6:9.2f}{gflops:9.2f}'
                f'{_fmt(lat and lat["median"] * 1e3, ".1f"):>11s}{span:>17s}'
                f'{_fmt(lat and lat["median"] * 1e3 / max(gflops, 1e-9), ".2f"):>9s}'
                f'{_fmt(res.get("train_iter_s", {}).get("median"), ".3f"):>9s}'
                f'{_fmt(mem and mem / 2**20, ".0f"):>9s}')
            if '+' in name and lat:
                lines.append(f'{"":<40s}first call (compilation + 1 run): '
                             f'{lat["first_s"]:.1f} s')
            if 'images_per_s' in res and settings['device'].startswith('cuda'):
                system = lat.get('system_s') if lat else None
                lines.append(f'{"":<40s}images/s: {res["images_per_s"]:.1f} fp32, '
                             f'{_fmt(res.get("images_per_s_amp"), ".1f")} AMP; system time '
                             f'{_fmt(system and system * 1e3, ".0f")} ms per run')
        ratios = run['ratios'][size]
        for base in BASELINES:
            if not any(base in r for r in ratios.values()):
                continue
            lines.append(f'ratios to {labels.get(base, base)}: GFLOPs / latency / latency per '
                         f'FLOP / train iter / peak memory')
            for name, per_base in ratios.items():
                r = per_base.get(base)
                if r is None or name == base:
                    continue
                lines.append(f'  {labels.get(name, name):<42s}' + ' / '.join(
                    _fmt(r[k]) for k in ('flops', 'latency', 'latency_per_flops', 'train_iter',
                                         'peak_memory')))
    return lines


def format_table(result: Dict) -> str:
    """The benchmark as text: one block per size (and allocator), the target, the dataloader."""
    labels = result.get('labels', LABELS)
    settings = result['settings']
    lines = []
    if settings.get('config', DEFAULT_CONFIG) != DEFAULT_CONFIG or settings.get('cfg_options'):
        lines.append(f'* EQUISeg from {osp.relpath(settings["config"], ROOT)}, options '
                     f'{settings.get("cfg_options") or {}}')
    lines += _size_blocks(result, labels)
    for other in result.get('other_allocators', {}).values():
        lines += _size_blocks(other, labels)
    for check in result.get('target', []):
        lines.append(
            f'\ntarget: {labels.get(TARGET["model"], TARGET["model"])} at most '
            f'{TARGET["ratio"]}x {labels.get(TARGET["baseline"], TARGET["baseline"])} at '
            f'{TARGET["size"]}x{TARGET["size"]}, allocator {check["allocator"]}: '
            f'{check["ratio"]:.2f}x -> {"met" if check["met"] else "NOT met"}')
    loader = result.get('dataloader')
    if loader:
        lines.append(f'\ndataloader: {loader["samples_per_s_per_worker"]:.1f} samples/s per '
                     f'worker ({loader["num_samples"]} samples of shape '
                     f'{loader["sample_shape"]}, synthetic train pipeline)')
    lines.append(f'\nFLOPs: {FLOP_METHOD}.\nMemory: {MEMORY_METHOD}.')
    return '\n'.join(lines)


def run_benchmark(args: argparse.Namespace) -> Dict:
    """Everything but ``--profile``; returns the JSON-ready result."""
    torch.set_num_threads(args.threads)
    device = args.device
    names = list(args.models)
    malloc_kept = keep_freed_memory() if args.allocator == 'keep' else False
    models = OrderedDict((name, build_model(name, args.config, device, args.cfg_options))
                         for name in names)
    wrappers = {}
    if args.compile:
        for name in [n for n in names if n in COMPILABLE]:
            compiled = f'{name}+compile'
            models[compiled] = models[name]  # the same modules, compiled separately
            wrappers[compiled] = torch.compile(TensorModeModel(models[name]).eval())
        names = list(models)
    result = dict(machine=machine_info(device),
                  settings=dict(sizes=args.sizes, repeats=args.repeats, warmup=args.warmup,
                                train_repeats=args.train_repeats, threads=args.threads,
                                batch=args.batch, train_batch=args.train_batch, device=device,
                                models=names, config=args.config,
                                cfg_options=args.cfg_options or {}, quick=args.quick,
                                allocator=args.allocator, malloc_keep=malloc_kept,
                                compile=args.compile),
                  flop_method=FLOP_METHOD, memory_method=MEMORY_METHOD,
                  labels={n: _label(n) + ('*' if n.startswith('equiseg-b0') and (
                      args.cfg_options or args.config != DEFAULT_CONFIG) else '')
                          for n in names}, results=OrderedDict(),
                  ratios=OrderedDict(), schedule=[])
    for size in args.sizes:
        per_model = OrderedDict()
        for name, model in models.items():
            if name in wrappers:  # the compiled path has the uncompiled one's arithmetic
                per_model[name] = copy.deepcopy(per_model[name.split('+')[0]])
                continue
            info = complexity(model, (size, size))
            per_model[name] = dict(params=info['params'],
                                   params_inference=info['params_inference'],
                                   flops=info['flops'],
                                   flops_by_part={k: v['flops'] for k, v in
                                                  info['parts'].items()},
                                   flops_not_counted=info['not_counted'])
        if args.repeats > 0:
            lat = measure_latency(models, size, args.warmup, args.repeats, args.batch, device,
                                  schedule=result['schedule'], wrappers=wrappers)
            for name in names:
                per_model[name]['latency_s'] = lat[name]
                per_model[name]['images_per_s'] = args.batch / lat[name]['median']
            if device.startswith('cuda'):
                amp = measure_latency(models, size, args.warmup, args.repeats, args.batch,
                                      device, amp=True, schedule=result['schedule'],
                                      wrappers=wrappers)
                for name in names:
                    per_model[name]['latency_amp_s'] = amp[name]
                    per_model[name]['images_per_s_amp'] = args.batch / amp[name]['median']
        plain = OrderedDict((n, m) for n, m in models.items() if n not in wrappers)
        if args.train_repeats > 0:
            train = measure_train_iter(plain, size, min(args.warmup, 1), args.train_repeats,
                                       args.train_batch, device, schedule=result['schedule'])
            for name in plain:
                per_model[name]['train_iter_s'] = train[name]
        if not args.no_memory:
            for name in plain:
                mem = measure_peak_memory(name, size, args.threads, device, args.config,
                                          args.cfg_options, args.batch)
                per_model[name]['peak_memory_bytes'] = mem['peak_bytes']
                per_model[name]['peak_memory'] = mem
        result['results'][str(size)] = per_model
        result['ratios'][str(size)] = compute_ratios(per_model)
    if args.data_samples > 0:
        result['dataloader'] = dataloader_throughput(args.data_root, args.data_samples)
    result['target'] = check_target(result)
    return result


def _label(name: str) -> str:
    base, _, suffix = name.partition('+')
    return LABELS[base] + (f' +{suffix}' if suffix else '')


def run_other_allocator(argv: Sequence[str], allocator: str) -> Dict:
    """The latency part of this benchmark (no memory, no dataloader) with another allocator
    setting, in a fresh process with this run's ``argv``; returns its JSON result.

    The child's own options come after ``argv``: argparse keeps the last value of an option,
    so they replace this run's ``--allocator``, ``--out`` and ``--data-samples``.
    """
    with tempfile.TemporaryDirectory(prefix='equiseg_bench_') as tmp:
        out = osp.join(tmp, 'result.json')
        cmd = [sys.executable, osp.abspath(__file__), *argv, '--allocator', allocator,
               '--no-memory', '--data-samples', '0', '--out', out]
        print(f'\n[benchmark] the same with --allocator {allocator} in a fresh process ...',
              flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f'the --allocator {allocator} run failed (exit '
                               f'{proc.returncode}):\n{proc.stdout[-3000:]}')
        with open(out) as f:
            return json.load(f)


def check_target(result: Dict) -> List[Dict]:
    """The project's performance target (:data:`TARGET`) for every allocator setting in
    ``result`` that timed both models at the target size."""
    runs = [(result['settings'].get('allocator', 'default'), result)]
    runs += [(name, other) for name, other in result.get('other_allocators', {}).items()]
    checks = []
    for allocator, run in runs:
        per_model = run['results'].get(str(TARGET['size']), {})
        model, base = per_model.get(TARGET['model']), per_model.get(TARGET['baseline'])
        if not model or not base or 'latency_s' not in model or 'latency_s' not in base:
            continue
        ratio = model['latency_s']['median'] / base['latency_s']['median']
        checks.append(dict(allocator=allocator, ratio=ratio, limit=TARGET['ratio'],
                           met=ratio <= TARGET['ratio']))
    return checks


def _label_modules(model: torch.nn.Module, labelled: Sequence[str],
                   synced: Sequence[str] = (), sync: bool = False) -> List:
    """Forward hooks: the ``labelled`` submodules run inside ``record_function`` labels named
    after them; with ``sync`` (CUDA), those and the ``synced`` ones synchronise the device
    before and after, so that a label's CPU time covers its GPU work."""
    from torch.autograd.profiler import record_function
    handles = []
    for name, module in model.named_modules():
        if name not in labelled and name not in synced:
            continue
        label = name in labelled

        def pre(mod, args, name=name, label=label):
            if sync:
                torch.cuda.synchronize()
            if label:
                mod._bench_rf = record_function(name)
                mod._bench_rf.__enter__()

        def post(mod, args, out, label=label):
            if sync:
                torch.cuda.synchronize()
            if label:
                mod._bench_rf.__exit__(None, None, None)
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def run_profile(args: argparse.Namespace) -> Dict:
    """torch.profiler on EQUISeg-B0 at the first size: top operators and time per part."""
    from torch.profiler import ProfilerActivity, profile
    torch.set_num_threads(args.threads)
    size, device = args.sizes[0], args.device
    model = build_model('equiseg-b0', args.config, device, args.cfg_options)
    wrapper = TensorModeModel(model).eval()
    x = torch.randn(1, input_channels(model), size, size, device=device)
    parts = [f'backbone.branches.{i}' for i in range(len(model.backbone.branches))]
    for i, blocks in enumerate(model.neck.stages):  # called as modules with shared weights
        for j, block in enumerate(blocks):
            parts.append(f'neck.stages.{i}.{j}')
            parts += [f'neck.stages.{i}.{j}.{sub}' for sub in ('self_attn', 'cross_attn')
                      if hasattr(block, sub)]
    handles = _label_modules(wrapper, parts, synced=('backbone', 'neck', 'decode_head'),
                             sync=device.startswith('cuda'))
    activities = [ProfilerActivity.CPU]
    if device.startswith('cuda'):
        activities.append(ProfilerActivity.CUDA)
    with torch.no_grad():
        for _ in range(max(args.warmup, 1)):
            wrapper(x)
        _sync(device)
        with profile(activities=activities) as prof:
            for _ in range(max(args.repeats, 1)):
                wrapper(x)
            _sync(device)
    for h in handles:
        h.remove()
    events = {e.key: e for e in prof.key_averages()}
    labels = ['backbone', 'neck', 'decode_head'] + parts
    times = {k: events[k].cpu_time_total / 1e6 for k in labels if k in events}
    total = sum(times.get(k, 0.) for k in ('backbone', 'neck', 'decode_head'))
    sort_by = 'self_device_time_total' if device.startswith('cuda') else 'self_cpu_time_total'
    table = prof.key_averages().table(sort_by=sort_by, row_limit=args.profile_rows,
                                      max_name_column_width=60)
    print(f'EQUISeg-B0 (RGB-D-E-L) at {size}x{size}, {args.threads} threads, {device}, '
          f'{max(args.repeats, 1)} forward(s) profiled')
    print(table)
    print('share of the forward time (CPU time under each label; nested labels are parts of '
          'their parent):')
    for key in labels:
        if key in times:
            print(f'  {key:<32s}{times[key]:9.3f} s {100 * times[key] / max(total, 1e-12):6.1f}%')
    return dict(size=size, device=device, threads=args.threads, seconds=times,
                shares={k: v / max(total, 1e-12) for k, v in times.items()},
                machine=machine_info(device))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Interleaved benchmark of EQUISeg-B0 against SegFormer-B0 baselines: '
        'params, FLOPs, latency, train iteration, peak memory, dataloader throughput.')
    parser.add_argument('--sizes', type=int, nargs='+', default=[512, 1024],
                        help='square input sizes. Default 512 1024')
    parser.add_argument('--repeats', type=int, default=10, help='timed runs per model and size')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs first')
    parser.add_argument('--train-repeats', type=int, default=3,
                        help='timed training iterations per model and size (0: skip)')
    parser.add_argument('--batch', type=int, default=1, help='inference batch size')
    parser.add_argument('--train-batch', type=int, default=2, help='training batch size')
    parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    parser.add_argument('--models', nargs='+', default=list(MODEL_NAMES),
                        choices=list(MODEL_NAMES), help='models to run (default all)')
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='EQUISeg-B0 config')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='overrides of the EQUISeg config, e.g. '
                        'model.neck.aux_summary=per_primary model.neck.cross_sr_ratios=None '
                        'model.neck.self_attn=True (the paper\'s CMTB)')
    parser.add_argument('--device', default=None,
                        help='cpu or cuda[:i]; default cuda when available')
    parser.add_argument('--data-root', default=None,
                        help='synthetic dataset for the dataloader throughput (default: write '
                        'one to a temporary folder)')
    parser.add_argument('--data-samples', type=int, default=32,
                        help='samples timed for the dataloader throughput (0: skip)')
    parser.add_argument('--no-memory', action='store_true', help='skip peak memory')
    parser.add_argument('--allocator', choices=('default', 'keep', 'both'), default='default',
                        help="glibc's memory allocator: as started ('default'), keeping freed "
                        "memory for reuse instead of page-faulting every large buffer in again "
                        "('keep', see the module docstring; latency and training time only), or "
                        "'both' (the latency and training runs again with 'keep' in a fresh "
                        'process)')
    parser.add_argument('--malloc-keep', action='store_true',
                        help='the same as --allocator keep')
    parser.add_argument('--compile', action='store_true',
                        help='also time torch.compile (inductor) of the tensor-mode path of '
                        f'{" and ".join(COMPILABLE)} (rows "+compile"; first_s in the JSON is '
                        'compilation plus one run)')
    parser.add_argument('--out', default=None, help='write the results as JSON here')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: 64x64, 2 repeats, 1 warm-up, 1 train iteration, '
                        '4 dataloader samples')
    parser.add_argument('--profile', action='store_true',
                        help='profile EQUISeg-B0 at the first size instead of benchmarking')
    parser.add_argument('--profile-rows', type=int, default=20, help='operators listed')
    parser.add_argument('--memory-child', nargs=2, metavar=('MODEL', 'SIZE'),
                        help=argparse.SUPPRESS)
    parser.add_argument('--cfg-json', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.warmup = [64], 2, 1
        args.train_repeats, args.data_samples = min(args.train_repeats, 1), min(
            args.data_samples, 4)
    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: CUDA is not available')
    if any(s < 32 or s % 32 for s in args.sizes):
        parser.error(f'--sizes must be multiples of 32, got {args.sizes}')
    if args.repeats < 0 or args.warmup < 0 or args.train_repeats < 0 or args.threads < 1:
        parser.error('--repeats, --warmup and --train-repeats must be >= 0, --threads >= 1')
    args.models = list(OrderedDict.fromkeys(args.models))
    if args.malloc_keep:
        if args.allocator not in ('default', 'keep'):
            parser.error(f'--malloc-keep contradicts --allocator {args.allocator}')
        args.allocator = 'keep'
    if args.cfg_json is not None:  # the memory subprocess gets the parent's --cfg-options
        args.cfg_options = json.loads(args.cfg_json) or None
    return args


def main(argv=None) -> Dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.memory_child:
        name, size = args.memory_child
        print(json.dumps(peak_memory_child(name, int(size), args.threads, args.device,
                                           args.config, args.batch, args.cfg_options)))
        return {}
    if args.profile:
        result = run_profile(args)
    else:
        both = args.allocator == 'both'
        if both:
            args.allocator = 'default'
        result = run_benchmark(args)
        if both:
            other = run_other_allocator(argv, 'keep')
            result['other_allocators'] = {'keep': {k: other[k] for k in (
                'settings', 'results', 'ratios', 'schedule', 'machine')}}
            result['target'] = check_target(result)
        print(format_table(result))
    if args.out:
        if osp.dirname(args.out):
            os.makedirs(osp.dirname(args.out), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)
        print(f'\nwrote {args.out}')
    return result


if __name__ == '__main__':
    main()

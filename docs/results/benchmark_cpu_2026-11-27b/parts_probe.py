"""Probe (not a tool): where EQUISeg-B0's inference time goes at 1024 x 1024 against the
weights-off + channels-last SegFormer-B0: backbone (4 branches), neck, head (mmseg's
SegformerHead and FastSegformerHead), timed interleaved in one process. Run from the repository
root with glibc keeping freed memory:
    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483647 \\
    MALLOC_TOP_PAD_=1073741824 PYTHONPATH=. .venv/bin/python \\
    docs/results/benchmark_cpu_2026-11-27b/parts_probe.py [SIZE] [REPEATS]
"""
import statistics
import sys
import time

import torch

sys.path.insert(0, 'tools/analysis_tools')
import benchmark as B  # noqa: E402

torch.set_num_threads(2)
size = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
eq = B.build_model('equiseg-b0')  # FastSegformerHead
stock = B.build_model('equiseg-b0-stockhead')  # mmseg's SegformerHead, same weights (seed)
sf = B.build_model('segformer-b0-cl')
x4, x1 = torch.randn(1, 12, size, size), torch.randn(1, 3, size, size)
with torch.no_grad():
    fe = eq.backbone(x4)
    ne = eq.neck(fe)
    fs = sf.backbone(x1)
    diff = (eq.decode_head(ne) - stock.decode_head(ne)).abs().max().item()
    print(f'max |FastSegformerHead - SegformerHead| on the same maps: {diff:.1e}')
    tasks = {
        'equiseg backbone (4 branches)': lambda: eq.backbone(x4),
        'equiseg neck': lambda: eq.neck(fe),
        'equiseg head, SegformerHead': lambda: stock.decode_head(ne),
        'equiseg head, FastSegformerHead': lambda: eq.decode_head(ne),
        'segformer backbone': lambda: sf.backbone(x1),
        'segformer head, SegformerHead': lambda: sf.decode_head(fs),
    }
    for task in tasks.values():
        task()
    times = {k: [] for k in tasks}
    for _ in range(repeats):
        for k, task in tasks.items():
            start = time.perf_counter()
            task()
            times[k].append(time.perf_counter() - start)
for k, v in times.items():
    print(f'{k:34s} {statistics.median(v) * 1000:7.0f} ms  {[round(t * 1000) for t in v]}')

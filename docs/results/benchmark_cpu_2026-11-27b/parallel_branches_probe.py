"""Probe (not a tool): the four MiT-B0 branches of EQUISeg-B0 at 1024 x 1024 one after another with
2 intra-op threads (seq) against two Python threads running two branches each with 1 intra-op
thread (par). Run from the repository root with glibc keeping freed memory:
    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483647 \\
    MALLOC_TOP_PAD_=1073741824 PYTHONPATH=. .venv/bin/python \\
    docs/results/benchmark_cpu_2026-11-27b/parallel_branches_probe.py
"""
import statistics
import sys
import threading
import time

import torch

sys.path.insert(0, 'tools/analysis_tools')
import benchmark as B  # noqa: E402

torch.set_num_threads(2)
eq = B.build_model('equiseg-b0')
bb = eq.backbone
x = torch.randn(1, 12, 1024, 1024)
def seq():
    return [bb._branch_maps(n, br, x[:, bb._slices[name]]) for n, (name, br) in enumerate(zip(bb.modalities, bb.branches))]
def par(groups=((0, 2), (1, 3)), nt=1):
    res = [None] * 4
    def work(idx):
        torch.set_num_threads(nt)
        with torch.no_grad():
            for n in idx:
                name = bb.modalities[n]
                res[n] = bb._branch_maps(n, bb.branches[n], x[:, bb._slices[name]])
    ts = [threading.Thread(target=work, args=(g,)) for g in groups]
    [t.start() for t in ts]; [t.join() for t in ts]
    return res
with torch.no_grad():
    a = seq(); b = par()
    print('maxdiff', max((u - v).abs().max().item() for p, q in zip(a, b) for u, v in zip(p, q)))
    print('threads after', torch.get_num_threads())
    t = {'seq': [], 'par': []}
    for r in range(4):
        s = time.perf_counter(); seq(); t['seq'].append(time.perf_counter() - s)
        s = time.perf_counter(); par(); t['par'].append(time.perf_counter() - s)
    for k, v in t.items(): print(k, round(statistics.median(v) * 1000), [round(q * 1000) for q in v])

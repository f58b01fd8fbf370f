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


def run_branch(n):
    return bb._branch_maps(n, bb.branches[n], x[:, bb._slices[bb.modalities[n]]])


def seq():
    """The four branches one after another, 2 intra-op threads."""
    return [run_branch(n) for n in range(len(bb.branches))]


def par(groups=((0, 2), (1, 3)), threads=1):
    """Two Python threads, each running its branches with `threads` intra-op threads."""
    res = [None] * len(bb.branches)

    def work(idx):
        torch.set_num_threads(threads)  # per calling thread
        with torch.no_grad():
            for n in idx:
                res[n] = run_branch(n)
    workers = [threading.Thread(target=work, args=(g, )) for g in groups]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return res


with torch.no_grad():
    a, b = seq(), par()
    print('maxdiff', max((u - v).abs().max().item() for p, q in zip(a, b) for u, v in zip(p, q)))
    print('threads after', torch.get_num_threads())
    times = {'seq': [], 'par': []}
    for _ in range(4):
        for name, fn in (('seq', seq), ('par', par)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    for name, t in times.items():
        print(name, round(statistics.median(t) * 1000), [round(v * 1000) for v in t])

"""Probe (not a tool): torch's fused scaled-dot-product attention against chunked matrix products
(scores for `chunk` queries at a time, softmax, times V) at the attention shapes of MiT-B0 and the
CMTB at 1024 x 1024 (head dim 32). Run with glibc keeping freed memory:
    MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=2147483647 \\
    MALLOC_TOP_PAD_=1073741824 .venv/bin/python docs/results/benchmark_cpu_2026-11-27b/sdpa_probe.py
"""
import statistics
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
# (name, batch, heads, queries, keys) of every attention call at 1024 x 1024, head dim 32
SHAPES = [('branch s1', 1, 1, 65536, 1024), ('branch s2', 1, 2, 16384, 1024),
          ('branch s3', 1, 5, 4096, 1024), ('branch s4', 1, 8, 1024, 1024),
          ('neck s1 x', 4, 1, 65536, 256), ('neck s2 x', 4, 2, 16384, 256),
          ('neck s3 self', 4, 5, 4096, 1024), ('neck s3 x', 4, 5, 4096, 256),
          ('neck s4 self', 4, 8, 1024, 1024)]


def chunked(q, k, v, chunk):
    """softmax(Q K^T / sqrt(d)) V, `chunk` queries at a time."""
    out = torch.empty_like(q)
    kt = k.transpose(-2, -1) * q.shape[-1] ** -0.5
    for s in range(0, q.shape[-2], chunk):
        a = torch.matmul(q[..., s:s + chunk, :], kt)
        torch.softmax(a, -1, out=a)
        torch.matmul(a, v, out=out[..., s:s + chunk, :])
    return out


def median_ms(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


with torch.no_grad():
    for name, b, h, lq, lk in SHAPES:
        q, k, v = (torch.randn(b, h, n, 32) for n in (lq, lk, lk))
        ref = F.scaled_dot_product_attention(q, k, v)
        fns = {'sdpa': lambda: F.scaled_dot_product_attention(q, k, v)}
        for c in (256, 1024, 4096):
            fns[f'm{c}'] = (lambda c=c: chunked(q, k, v, c))
        err = (chunked(q, k, v, 1024) - ref).abs().max().item()
        cells = '  '.join(f'{n} {median_ms(fn):6.1f}' for n, fn in fns.items())
        print(f'{name:13s} {cells} err {err:.1e}')

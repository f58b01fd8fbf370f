"""Latency of an exported model in onnxruntime against the eager PyTorch model, per number of
present sensors, with the export time and the parity of the two.

    python tools/deployment/benchmark_deploy.py [--config CONFIG]
        [--reference-config CONFIG] [--sizes 512 1024] [--repeats 3] [--warmup 1]
        [--threads N] [--graph-optimization all] [--out-dir DIR]

Per square size, each model is built from its config with random weights (seed 0, the
config's fast path) and exported at that fixed size with logits
(:func:`~equiseg_mm.deploy.export_onnx`: absent branches skipped). Timed, on one random frame
(values in [0, 255]), batch 1, ``--threads`` for PyTorch and onnxruntime alike:

* eager: ``model.test_step`` under the preprocessor's ``protocol(missing=...)``, as the inference
  API runs a frame (normalisation, zeroing, forward, resize, argmax; an absent branch's output
  for zeros comes from the backbone's cache after the warm-up, as in any long-running process);
* onnxruntime: :meth:`~equiseg_mm.deploy.ORTSegmentor.run` on the raw arrays and the mask.

The rows are the N, N-1, ..., 1 first modalities present (RGB-D-E-L: all, without lidar,
RGB-D, RGB); the timed runs go round robin over rows and backends after ``--warmup`` runs of
each. Parity: :func:`~equiseg_mm.deploy.verify_onnx` on every modality subset (label agreement,
largest logit difference). The reference (SegFormer-B0 by default) gets the same export and
timing with its one modality. Writes ``benchmark_deploy.json`` and ``benchmark_deploy.txt``
(machine, versions, command, tables) to ``--out-dir``.
"""
import argparse
import copy
import json
import os
import os.path as osp
import platform
import shlex
import statistics
import sys
import tempfile
import time
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/
import _common  # noqa: E402,F401,I001  (first: EQUISEG_COMPAT=all, quiet stack warnings)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = 'configs/equiseg/equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py'
REFERENCE = 'configs/baselines/segformer_mit-b0_1xb8-1k_synthetic-rgb-96x96.py'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Exported (onnxruntime) against eager latency per number of sensors.')
    parser.add_argument('--config', default=CONFIG, help=f'multimodal config ({CONFIG})')
    parser.add_argument('--reference-config', default=REFERENCE,
                        help=f"reference exported the same way ({REFERENCE}); '' for none")
    parser.add_argument('--sizes', type=int, nargs='+', default=[512, 1024],
                        help='square input sizes (512 1024)')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per row (3)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs per row (1)')
    parser.add_argument('--threads', type=int, default=None,
                        help='threads of PyTorch and onnxruntime (default: the CPU count)')
    parser.add_argument('--graph-optimization', default='all',
                        choices=('disable', 'basic', 'extended', 'all'),
                        help="onnxruntime's graph optimisation level (all)")
    parser.add_argument('--no-parity', action='store_true',
                        help='skip the comparison on every modality subset')
    parser.add_argument('--out-dir', default='work_dirs/benchmark_deploy',
                        help='where the JSON and the text report go')
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or min(args.sizes) < 64:
        parser.error('--repeats >= 1, --warmup >= 0 and sizes >= 64')
    return args


def machine() -> Dict:
    """The CPU (lscpu's model name and vector units), the load and the library versions."""
    import numpy
    import onnx
    import onnxruntime
    import torch
    flags = ''
    try:
        with open('/proc/cpuinfo') as f:
            flags = next((line.split(':', 1)[1] for line in f if line.startswith('flags')), '')
    except OSError:
        pass
    simd = [f for f in ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile')
            if f' {f} ' in f' {flags} ']
    return dict(cpu=_common.cpu_name(), cpu_flags=simd, cores=os.cpu_count(),
                platform=platform.platform(), python=platform.python_version(),
                torch=torch.__version__, onnxruntime=onnxruntime.__version__,
                onnx=onnx.__version__, numpy=numpy.__version__)


def _eager_runner(model, inputs: Dict, present: List[str]):
    import numpy as np
    import torch
    from mmseg.structures import SegDataSample
    pre = model.data_preprocessor
    stacked = torch.from_numpy(np.concatenate([inputs[n] for n in pre.spec.names], 0))
    hw = tuple(stacked.shape[1:])
    missing = [n for n in pre.spec.names if n not in present]

    def run():
        data = dict(inputs=[stacked], data_samples=[SegDataSample(
            metainfo=dict(img_shape=hw, ori_shape=hw))])
        with pre.protocol(missing=missing, ratio=1.0), torch.no_grad():
            return model.test_step(data)

    return run


def bench_model(name: str, config: str, size: int, args, workdir: str) -> Dict:
    """Export one model at ``size``, check parity, time every row of both backends."""
    import numpy as np
    import torch
    from equiseg_mm.apis import init_multimodal_model
    from equiseg_mm.deploy import ORTSegmentor, export_onnx, verify_onnx
    torch.manual_seed(0)
    model = init_multimodal_model(osp.join(ROOT, config), device='cpu')
    names = list(model.data_preprocessor.spec.names)
    path = osp.join(workdir, f'{name}_{size}.onnx')
    meta = export_onnx(model, path, shape=(size, size), with_logits=True)
    print(f'[{name} {size}] exported in {meta["export_s"]:.1f}s '
          f'({osp.getsize(path) / 2**20:.1f} MiB)', flush=True)
    ort_model = ORTSegmentor(path, copy.deepcopy(model.data_preprocessor),
                             threads=args.threads, graph_optimization=args.graph_optimization)
    rng = np.random.default_rng(0)
    inputs = {n: rng.uniform(0, 255, (c, size, size)).astype(np.float32)
              for n, c in zip(names, model.data_preprocessor.spec.channels)}
    parity = [] if args.no_parity else verify_onnx(model, path, inputs=inputs)
    rows = [names[:k] for k in range(len(names), 0, -1)]
    runners = {}
    for present in rows:
        key = '+'.join(present)
        runners[(key, 'eager')] = _eager_runner(model, inputs, present)
        runners[(key, 'onnxruntime')] = (
            lambda p=present: ort_model.run({n: inputs[n] for n in p}, p))
    for run in runners.values():
        for _ in range(args.warmup):
            run()
    times = {k: [] for k in runners}
    for _ in range(args.repeats):
        for key, run in runners.items():
            start = time.perf_counter()
            run()
            times[key].append((time.perf_counter() - start) * 1000)
    out_rows = []
    for present in rows:
        key = '+'.join(present)
        eager, ort = times[(key, 'eager')], times[(key, 'onnxruntime')]
        out_rows.append(dict(present=key, sensors=len(present),
                             eager_ms=statistics.median(eager), eager_all_ms=eager,
                             onnxruntime_ms=statistics.median(ort), onnxruntime_all_ms=ort))
        print(f'[{name} {size}] {key:<24} eager {out_rows[-1]["eager_ms"]:8.1f} ms  '
              f'onnxruntime {out_rows[-1]["onnxruntime_ms"]:8.1f} ms', flush=True)
    full = out_rows[0]['onnxruntime_ms']
    for row in out_rows:
        row['onnxruntime_vs_eager'] = row['onnxruntime_ms'] / row['eager_ms']
        row['onnxruntime_vs_all_present'] = row['onnxruntime_ms'] / full
    file_mib = osp.getsize(path) / 2**20
    del ort_model
    os.remove(path)
    return dict(model=name, config=config, size=size, export_s=meta['export_s'],
                file_mib=file_mib, opset=meta['opset'], skip_absent=meta['skip_absent'],
                parity=parity, rows=out_rows)


def _report(result: Dict) -> str:
    m = result['machine']
    lines = [f'machine: {m["cpu"]}; flags {", ".join(m["cpu_flags"]) or "-"}; '
             f'{m["platform"]}', f'torch {m["torch"]}, onnxruntime {m["onnxruntime"]}, onnx '
             f'{m["onnx"]}, python {m["python"]}; threads {result["threads"]}; onnxruntime '
             f'graph optimisation {result["graph_optimization"]}',
             f'load average before / after: {result["load_before"]} / {result["load_after"]}',
             f'command: {result["command"]}', '']
    for entry in result['models']:
        skip = 'skipped' if entry['skip_absent'] else 'run'
        lines.append(f'== {entry["model"]} ({entry["config"]}), {entry["size"]}x{entry["size"]}'
                     f', batch 1: export {entry["export_s"]:.1f} s, file '
                     f'{entry["file_mib"]:.1f} MiB (opset {entry["opset"]}, absent branches '
                     f'{skip})')
        lines.append(f'{"present":<26}{"eager ms":>10}{"onnxruntime ms":>16}'
                     f'{"ort/eager":>11}{"ort/all present":>17}')
        for r in entry['rows']:
            lines.append(f'{r["present"]:<26}{r["eager_ms"]:>10.1f}{r["onnxruntime_ms"]:>16.1f}'
                         f'{r["onnxruntime_vs_eager"]:>11.2f}'
                         f'{r["onnxruntime_vs_all_present"]:>17.2f}')
        if entry['parity']:
            worst = min(entry['parity'], key=lambda r: r['agreement'])
            diff = max(r['max_logit_diff'] for r in entry['parity'])
            lines.append(f'parity over {len(entry["parity"])} subsets: lowest label agreement '
                         f'{worst["agreement"]:.4%} ({worst["subset"]}), largest |logit '
                         f'difference| {diff:.2e} (fp32)')
        lines.append('')
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import equiseg_mm  # noqa: F401  (registration)
    args.threads = args.threads or os.cpu_count()
    torch.set_num_threads(args.threads)
    result = dict(machine=machine(), threads=args.threads,
                  graph_optimization=args.graph_optimization,
                  command=' '.join(shlex.quote(a) for a in [
                      'tools/deployment/benchmark_deploy.py'] + list(
                          sys.argv[1:] if argv is None else argv)),
                  load_before=[round(v, 2) for v in os.getloadavg()], models=[])
    os.makedirs(args.out_dir, exist_ok=True)
    models = [('EQUISeg-B0', args.config)]
    if args.reference_config:
        models.append(('SegFormer-B0', args.reference_config))
    with tempfile.TemporaryDirectory() as workdir:
        for size in args.sizes:
            for name, config in models:
                result['models'].append(bench_model(name, config, size, args, workdir))
                result['load_after'] = [round(v, 2) for v in os.getloadavg()]
                text = _report(result)  # written after every model: a partial run is kept
                with open(osp.join(args.out_dir, 'benchmark_deploy.json'), 'w') as f:
                    json.dump(result, f, indent=1)
                with open(osp.join(args.out_dir, 'benchmark_deploy.txt'), 'w') as f:
                    f.write(text + '\n')
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())

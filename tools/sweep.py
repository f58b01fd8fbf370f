"""Train and robustness-test several variants over several seeds; print mean +- std per figure.

    # the main job's comparison over 3 seeds (EQUISeg, its no-SGM ablation, early fusion)
    python tools/sweep.py --preset demo --seeds 0 1 2 --max-iters 400
    # the same three models x modality dropout 0 / 0.15 / 0.3 / 0.5
    python tools/sweep.py --preset dropout --seeds 0 1 2 --max-iters 400 --jobs 2
    # the defaults' sweep (neck x SGM x modality dropout) on the second task, the street scene
    python tools/sweep.py --preset defaults --scene street --seeds 0 1 2 --max-iters 400 --jobs 2
    # your own variants: NAME CONFIG [KEY=VALUE ...] (cfg-options of that variant)
    python tools/sweep.py --variant b0 configs/equiseg/equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py \\
        --variant b0-md configs/equiseg/equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py \\
        model.data_preprocessor.modality_dropout=0.3 --seeds 0 1 2

Every (variant, seed) run trains with ``randomness.seed=seed`` on the same synthetic data
(generated with seed 0 if missing; ``--scene`` picks the generator's scene preset, each with its
own default folder) and runs the config's test loop; its figures are written to
``<work-dir>/<variant>/seed<k>/result.json``, and a finished run is not repeated when the sweep is
started again with the same settings. ``--jobs`` runs that many at once in subprocesses (each with
``cores / jobs`` threads). The table (also ``<work-dir>/table.md`` and ``results.json``) gives
mean +- sample std over the seeds; a difference to the reference variant (the first) is marked
``*`` when it is larger than the two spreads together: |mean_v - mean_ref| > std_v + std_ref.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

import _common  # noqa: F401,I001  (first: EQUISEG_COMPAT=all, quiet stack warnings)
import numpy as np
from _synthetic_deliver import SCENES

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SYNTHETIC = osp.join(ROOT, 'configs', 'equiseg', 'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
_MODELS = [
    ('equiseg', SYNTHETIC),
    ('equiseg-nosgm', osp.join(ROOT, 'configs', 'equiseg',
                               'equiseg-nosgm_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')),
    ('earlyfusion', osp.join(ROOT, 'configs', 'baselines',
                             'earlyfusion_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')),
]
PAPERNECK = osp.join(ROOT, 'configs', 'equiseg',
                     'equiseg-paperneck_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
_NO_SGM = {'model.auxiliary_head': None}
#: the per-modality dropout rates of the ``defaults`` preset: the colour camera, which carries
#: most classes on the street scene, is dropped more often than the others
PER_MODALITY_DROPOUT = {'rgb': 0.3, 'depth': 0.15, 'event': 0.15, 'lidar': 0.15}
PRESETS = {
    # the demo's comparison, each config as shipped
    'demo': [(name, config, {}) for name, config in _MODELS],
    # the same three models, each at four modality-dropout rates
    'dropout': [(f'{name}-md{rate}', config, {'model.data_preprocessor.modality_dropout': rate})
                for name, config in _MODELS for rate in (0.0, 0.15, 0.3, 0.5)],
    # the shipped defaults' evidence: the paper's CMTB with and without SGM, the shipped neck,
    # modality dropout 0.15 / 0.3 / per-modality on the paper's block, and the dead-sensor
    # recipe (the shipped neck with dropout 0.15)
    'defaults': [
        ('paper', PAPERNECK, {}),
        ('paper-nosgm', PAPERNECK, _NO_SGM),
        ('shipped', SYNTHETIC, {}),
        ('paper-md0.15', PAPERNECK, {'model.data_preprocessor.modality_dropout': 0.15}),
        ('paper-md0.3', PAPERNECK, {'model.data_preprocessor.modality_dropout': 0.3}),
        ('paper-mdpm', PAPERNECK, {'model.data_preprocessor.modality_dropout':
                                   PER_MODALITY_DROPOUT}),
        ('shipped-md0.15', SYNTHETIC, {'model.data_preprocessor.modality_dropout': 0.15}),
    ],
}


def figure_keys(metrics: dict) -> list:
    """The figures of the table, in the demo summary's order."""
    keys = ['mm/mIoU', 'mm/EMM_avg', 'mm/EMM_E@0.2', 'mm/EMM_E@0.1', 'mm/EMM_E@0.05']
    keys += sorted(k for k in metrics if k.startswith('mm/delta/'))
    keys += sorted(k for k in metrics if k.startswith('mm/single/'))
    keys += sorted(k for k in metrics if k.startswith('mm/balance'))
    return [k for k in keys if k in metrics]


def aggregate(results: dict) -> dict:
    """``{variant: {figure: (mean, std, n)}}`` from ``{variant: {seed: metrics}}``; std is the
    sample standard deviation (0 for one seed)."""
    out = {}
    for variant, runs in results.items():
        figures = {}
        for key in figure_keys(next(iter(runs.values()))):
            values = np.array([m[key] for m in runs.values() if key in m], dtype=float)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            figures[key] = (float(values.mean()), std, len(values))
        out[variant] = figures
    return out


def format_table(stats: dict, reference: str) -> str:
    """Markdown table of mean +- std, ``*`` where a variant differs from ``reference`` by more
    than the two spreads together."""
    names = list(stats)
    seeds = {n: max((s[2] for s in stats[n].values()), default=0) for n in names}
    lines = ['| figure | ' + ' | '.join(f'{n} ({seeds[n]} seeds)' for n in names) + ' |',
             '|---|' + '---|' * len(names)]
    for key in stats[reference]:
        cells = []
        ref_mean, ref_std, _ = stats[reference][key]
        for n in names:
            if key not in stats[n]:
                cells.append('-')
                continue
            mean, std, _ = stats[n][key]
            mark = '*' if n != reference and abs(mean - ref_mean) > std + ref_std else ''
            cells.append(f'{mean:.2f} ± {std:.2f}{mark}')
        lines.append(f'| {key[len("mm/"):]} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    lines.append(f'mean ± sample std over seeds; * = differs from {reference} by more than the '
                 'two spreads together (|mean - mean_ref| > std + std_ref).')
    return '\n'.join(lines)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Multi-seed sweep: train + robustness test per variant and seed',
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--preset', choices=sorted(PRESETS), help='a named set of variants')
    parser.add_argument('--variant', nargs='+', action='append', default=[],
                        metavar='NAME CONFIG [KEY=VALUE]',
                        help='a variant: name, config and its cfg-options (repeatable)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--max-iters', type=int, default=None,
                        help='schedule length of every run (warm-up and decay scaled)')
    parser.add_argument('--jobs', type=int, default=1, help='runs at once (subprocesses)')
    parser.add_argument('--scene', default='complementary', choices=sorted(SCENES),
                        help='the synthetic task: the generator\'s scene preset')
    parser.add_argument('--data-root', default=None,
                        help='default: data/synthetic_deliver (complementary scene), '
                        'data/synthetic_street (street scene)')
    parser.add_argument('--work-dir', default=None,
                        help='default: work_dirs/sweep_<preset or "custom">')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='overrides applied to every variant (before its own)')
    parser.add_argument('--run-one', help=argparse.SUPPRESS)  # internal: one run's spec (JSON)
    args = parser.parse_args(argv)
    if args.run_one:
        return args
    variants = list(PRESETS.get(args.preset, []))
    for spec in args.variant:
        if len(spec) < 2:
            parser.error(f'--variant needs NAME CONFIG [KEY=VALUE ...], got {spec}')
        options = {}
        for item in spec[2:]:
            if '=' not in item:
                parser.error(f'variant {spec[0]!r}: {item!r} is not KEY=VALUE')
            key, value = item.split('=', 1)
            options[key] = DictAction._parse_iterable(value)
        variants.append((spec[0], spec[1], options))
    if not variants:
        parser.error('give --preset or at least one --variant')
    names = [v[0] for v in variants]
    if len(set(names)) != len(names):
        parser.error(f'variant names must be unique, got {names}')
    for name, config, _ in variants:
        if not osp.isfile(config):
            parser.error(f'variant {name!r}: config file {config!r} does not exist')
    if args.jobs < 1:
        parser.error('--jobs must be at least 1')
    args.variants = variants
    args.data_root = args.data_root or SCENES[args.scene]['data_root']
    args.work_dir = args.work_dir or osp.join(
        'work_dirs', f'sweep_{args.preset or "custom"}'
        + ('' if args.scene == 'complementary' else f'_{args.scene}'))
    return args


def _run_one(spec_path: str) -> None:
    import equiseg_mm  # noqa: F401
    from _runner import train_and_test
    with open(spec_path) as f:
        spec = json.load(f)
    result = train_and_test(spec['config'], spec['work_dir'], data_root=spec['data_root'],
                            seed=spec['seed'], max_iters=spec['max_iters'],
                            cfg_options=spec['cfg_options'], quiet=True)
    result['spec'] = spec
    tmp = osp.join(spec['work_dir'], 'result.json.tmp')
    with open(tmp, 'w') as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, osp.join(spec['work_dir'], 'result.json'))


def _load_done(spec: dict):
    path = osp.join(spec['work_dir'], 'result.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        result = json.load(f)
    return result if result.get('spec') == spec else None


def main(argv=None):
    args = parse_args(argv)
    if args.run_one:
        _run_one(args.run_one)
        return
    from _synthetic_deliver import make_synthetic_deliver
    make_synthetic_deliver(args.data_root, seed=0, scene=args.scene)
    specs = []
    for seed in args.seeds:  # seed-major: a stopped sweep has every variant at the same seeds
        for name, config, options in args.variants:
            work_dir = osp.abspath(osp.join(args.work_dir, name, f'seed{seed}'))
            spec = dict(name=name, config=osp.abspath(config), work_dir=work_dir, seed=seed,
                        data_root=osp.abspath(args.data_root), max_iters=args.max_iters,
                        cfg_options=dict(args.cfg_options, **options))
            specs.append(json.loads(json.dumps(spec)))  # as spec.json holds it (tuples: lists)
    results = {name: {} for name, _, _ in args.variants}
    todo = []
    for spec in specs:
        done = _load_done(spec)
        if done:
            results[spec['name']][spec['seed']] = done['metrics']
        else:
            todo.append(spec)
    print(f'[sweep] {len(specs)} runs ({len(args.variants)} variants x {len(args.seeds)} seeds), '
          f'{len(specs) - len(todo)} already done, {args.jobs} at once; logs and results under '
          f'{args.work_dir}', flush=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    running, start, finished, durations, failed = [], time.time(), 0, [], []
    while todo or running:
        while todo and len(running) < args.jobs:
            spec = todo.pop(0)
            os.makedirs(spec['work_dir'], exist_ok=True)
            spec_path = osp.join(spec['work_dir'], 'spec.json')
            with open(spec_path, 'w') as f:
                json.dump(spec, f, indent=2)
            log = open(osp.join(spec['work_dir'], 'console.log'), 'w')
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            proc = subprocess.Popen([sys.executable, osp.abspath(__file__), '--run-one',
                                     spec_path], stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((proc, spec, log, time.time()))
        time.sleep(1)
        for item in list(running):
            proc, spec, log, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            finished += 1
            if proc.returncode != 0:  # the others go on; the table leaves this run out
                failed.append(spec)
                print(f'[sweep] run {spec["name"]} seed {spec["seed"]} FAILED (exit '
                      f'{proc.returncode}); see {spec["work_dir"]}/console.log', flush=True)
                continue
            done = _load_done(spec)
            if done is None:
                failed.append(spec)
                print(f'[sweep] run {spec["name"]} seed {spec["seed"]} wrote no result.json; see '
                      f'{spec["work_dir"]}/console.log', flush=True)
                continue
            durations.append(time.time() - t0)
            results[spec['name']][spec['seed']] = done['metrics']
            left = len(todo) + len(running)
            eta = np.mean(durations) * left / min(args.jobs, max(left, 1))
            print(f'[sweep] {finished}/{finished + left} done: {spec["name"]} seed {spec["seed"]}'
                  f' in {durations[-1] / 60:.1f} min; ETA {eta / 60:.1f} min', flush=True)
    results = {name: runs for name, runs in results.items() if runs}
    if not results:
        raise SystemExit(f'[sweep] every run failed; see the console.log files under '
                         f'{args.work_dir}')
    stats = aggregate(results)
    table = format_table(stats, reference=next(iter(stats)))
    if failed:
        table += '\n\nFailed runs (left out): ' + ', '.join(
            f'{spec["name"]} seed {spec["seed"]}' for spec in failed)
    header = (f'Sweep: {len(args.variants)} variants x seeds {args.seeds}, '
              f'{args.max_iters or "config"} iterations, wall time '
              f'{(time.time() - start) / 60:.1f} min this call')
    print('\n' + header + '\n\n' + table)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'table.md'), 'w') as f:
        f.write(header + '\n\n' + table + '\n')
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(dict(runs={n: {str(s): m for s, m in r.items()} for n, r in results.items()},
                       stats={n: {k: list(v) for k, v in s.items()} for n, s in stats.items()},
                       variants=[dict(name=n, config=c, cfg_options=o)
                                 for n, c, o in args.variants]), f, indent=2)


if __name__ == '__main__':
    main()

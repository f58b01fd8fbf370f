"""The main job of the README's first command.

Generates the embedded synthetic DeLiVER-layout dataset (if needed), trains EQUISeg-MiT-B0 on all
its modalities and the no-SGM ablation, evaluates both with the missing-modality robustness loop,
and prints a short summary: full-modality mIoU, the EMM average, each modality's contribution,
and where the reports and pictures are.

    python tools/run_demo.py [--data-root data/synthetic_deliver] [--work-dir work_dirs/demo]
        [--max-iters N] [--skip-ablation] [--cfg-options KEY=VALUE ...]
"""
import argparse
import json
import os
import os.path as osp
import time

from mmengine.config import DictAction

import equiseg_mm  # noqa: F401
from equiseg_mm.apis import prepare_config, runner_from_config
from equiseg_mm.datasets import make_synthetic_deliver
from equiseg_mm.visualization import visualize_modalities

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MAIN_CONFIG = osp.join(ROOT, 'configs', 'equiseg',
                       'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
ABLATION_CONFIG = osp.join(ROOT, 'configs', 'equiseg',
                           'equiseg-nosgm_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')


def parse_args():
    parser = argparse.ArgumentParser(description='EQUISeg main job on the synthetic data')
    parser.add_argument('--data-root', default='data/synthetic_deliver')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--config', default=MAIN_CONFIG)
    parser.add_argument('--ablation-config', default=ABLATION_CONFIG)
    parser.add_argument('--skip-ablation', action='store_true',
                        help='train and evaluate EQUISeg only (no no-SGM ablation)')
    parser.add_argument('--max-iters', type=int, default=None,
                        help='override train_cfg.max_iters of both configs')
    parser.add_argument('--seed', type=int, default=0, help='dataset and training seed')
    parser.add_argument('--num-panels', type=int, default=4,
                        help='test samples drawn as modality panels (inputs, GT, predictions '
                        'with each modality missing); 0: none')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='overrides applied to every trained config (after the demo\'s own), '
                        'e.g. model.neck.aux_summary=per_primary randomness.seed=1')
    return parser.parse_args()


def _run(name, config, args):
    """Train one config and evaluate it with the robustness loop; return the metrics."""
    work_dir = osp.join(args.work_dir, name)
    options = {
        'train_dataloader.dataset.data_root': args.data_root,
        'val_dataloader.dataset.data_root': args.data_root,
        'test_dataloader.dataset.data_root': args.data_root,
        'randomness.seed': args.seed,
        'experiment_name': f'{name}_{time.strftime("%Y%m%d_%H%M%S")}',
    }
    if args.max_iters:
        options['train_cfg.max_iters'] = args.max_iters
        options['train_cfg.val_interval'] = args.max_iters
    options.update(args.cfg_options)
    cfg = prepare_config(config, work_dir=work_dir, cfg_options=options)
    if args.max_iters:  # shrink warm-up and decay to the shorter schedule
        old = cfg.param_scheduler[-1]['end']
        for sched in cfg.param_scheduler:
            sched['begin'] = min(round(sched['begin'] * args.max_iters / old), args.max_iters - 1)
            sched['end'] = max(sched['begin'] + 1, round(sched['end'] * args.max_iters / old))
    runner = runner_from_config(cfg)
    start = time.time()
    runner.train()
    train_s = time.time() - start
    start = time.time()
    metrics = runner.test()
    test_s = time.time() - start
    panels = visualize_modalities(runner.model, runner.test_dataloader.dataset,
                                  osp.join(runner.log_dir, 'vis_modalities'),
                                  num_samples=args.num_panels) if args.num_panels > 0 else []
    return dict(metrics=metrics, train_s=train_s, test_s=test_s, work_dir=work_dir,
                log_dir=runner.log_dir, panels_dir=osp.dirname(panels[0]) if panels else None)


def _fmt(value):
    return '   -  ' if value is None else f'{value:6.2f}'


def _summary(results, modalities):
    names = list(results)
    lines = ['', '=' * 72, 'EQUISeg on the synthetic DeLiVER-layout data (test split)', '=' * 72]
    header = f'{"figure":<28}' + ''.join(f'{n:>16}' for n in names)
    lines.append(header)

    def row(label, key):
        vals = [results[n]['metrics'].get(key) for n in names]
        lines.append(f'{label:<28}' + ''.join(f'{_fmt(v):>16}' for v in vals))

    prefix = 'mm/'
    row('mIoU, all modalities', prefix + 'mIoU')
    row(f'EMM average ({2 ** len(modalities) - 1} subsets)', prefix + 'EMM_avg')
    for p in ('0.2', '0.1', '0.05'):
        row(f'EMM expectation E({p})', f'{prefix}EMM_E@{p}')
    for m in modalities:
        row(f'contribution delta_{m}', f'{prefix}delta/{m}')
    for m in modalities:
        row(f'mIoU {m} alone', f'{prefix}single/{m}')
    for key in sorted(results[names[0]]['metrics']):
        if key.startswith(prefix + 'balance'):
            row(key[len(prefix):], key)
    lines.append('')
    for n in names:
        r = results[n]
        lines.append(f'{n}: train {r["train_s"] / 60:.1f} min, robustness test '
                     f'{r["test_s"] / 60:.1f} min; report: {r["log_dir"]}/robustness_report.md'
                     f' (+ .json, .png)')
        if r.get('panels_dir'):
            lines.append(f'{" " * len(n)}  pictures: {r["panels_dir"]}/')
    return '\n'.join(lines)


def main():
    args = parse_args()
    for config in (args.config, None if args.skip_ablation else args.ablation_config):
        if config and not osp.isfile(config):
            raise SystemExit(f'error: config file {config!r} does not exist')
    t0 = time.time()
    summary = make_synthetic_deliver(args.data_root, seed=args.seed)
    print(f'[demo] synthetic data at {args.data_root}: {json.dumps(summary.get("num_samples", {}))}')
    runs = [('equiseg', args.config)]
    if not args.skip_ablation:
        runs.append(('equiseg-nosgm', args.ablation_config))
    results = {}
    for name, config in runs:
        print(f'[demo] training + robustness test: {name} ({osp.basename(config)})')
        results[name] = _run(name, config, args)
    from mmengine.config import Config
    modalities = list(Config.fromfile(args.config).modalities)
    text = _summary(results, modalities)
    total = time.time() - t0
    text += f'\nTotal wall time: {total / 60:.1f} min on {os.cpu_count()} CPU core(s).\n'
    print(text)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'summary.json'), 'w') as f:
        json.dump({k: dict(v, metrics={m: float(x) for m, x in v['metrics'].items()})
                   for k, v in results.items()} | {'total_s': total}, f, indent=2)
    with open(osp.join(args.work_dir, 'summary.txt'), 'w') as f:
        f.write(text)


if __name__ == '__main__':
    main()

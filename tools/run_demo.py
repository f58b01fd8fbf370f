"""The main job of the README's first command.

Generates the embedded synthetic DeLiVER-layout dataset (if needed), trains EQUISeg-MiT-B0 on all
its modalities and a baseline (early fusion: one MiT-B0 over the stacked channels, by default),
evaluates both with the missing-modality robustness loop, draws panels, and prints a summary:
full-modality mIoU, EMM average and expectations, contributions, single-modality mIoU, balance,
and where the reports and pictures are. The console shows progress lines with an ETA; the full
mmengine logs go to each run's log file.

    python tools/run_demo.py [--data-root data/synthetic_deliver] [--work-dir work_dirs/demo]
        [--max-iters N] [--baseline-config CONFIG | --skip-baseline] [--cfg-options KEY=VALUE ...]
"""
import argparse
import json
import os
import os.path as osp
import time

from _common import cpu_name  # noqa: I001  (first: EQUISEG_COMPAT=all, quiet stack warnings)
from _runner import train_and_test
from mmengine.config import Config, DictAction

import equiseg_mm  # noqa: F401
from _synthetic_deliver import make_synthetic_deliver
from equiseg_mm.engine import ProgressHook

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MAIN_CONFIG = osp.join(ROOT, 'configs', 'equiseg',
                       'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
BASELINE_CONFIG = osp.join(ROOT, 'configs', 'baselines',
                           'earlyfusion_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
DEMO_ITERS = 400
# Seconds per training iteration of the early-fusion baseline relative to EQUISeg-B0 on the
# demo's batches, used only for the first ETA (measured on the README's CPU; refined as soon
# as the baseline runs).
BASELINE_COST = 0.35
TEST_FRACTION = 0.05  # robustness test + panels, as a fraction of one EQUISeg run (rough)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='EQUISeg main job on the synthetic data')
    parser.add_argument('--data-root', default='data/synthetic_deliver')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--config', default=MAIN_CONFIG)
    parser.add_argument('--baseline-config', '--ablation-config', default=BASELINE_CONFIG,
                        help='the model EQUISeg is compared with (default: early fusion; the '
                        'no-SGM ablation is configs/equiseg/equiseg-nosgm_mit-b0_1xb8-1k_'
                        'synthetic-rgbdel-96x96.py)')
    parser.add_argument('--skip-baseline', '--skip-ablation', action='store_true',
                        help='train and evaluate EQUISeg only')
    parser.add_argument('--max-iters', type=int, default=DEMO_ITERS,
                        help=f'training iterations of each model (default {DEMO_ITERS}; the '
                        'configs\' own schedule is 1000); warm-up and decay are scaled')
    parser.add_argument('--seed', type=int, default=0, help='dataset and training seed')
    parser.add_argument('--num-panels', type=int, default=4,
                        help='test samples drawn as modality panels (inputs, GT, predictions '
                        'with each modality missing), picked across conditions; 0: none')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='overrides applied to every trained config (after the demo\'s own), '
                        'e.g. model.neck.aux_summary=per_primary')
    args = parser.parse_args(argv)
    for config in (args.config, None if args.skip_baseline else args.baseline_config):
        if config and not osp.isfile(config):
            parser.error(f'config file {config!r} does not exist')
    if args.max_iters < 1:
        parser.error('--max-iters must be at least 1')
    return args


def work_units(config: str, iters: int, cfg_options: dict) -> dict:
    """Machine-independent size of one training run: images x pixels x iterations, and the
    counted forward FLOPs per image (fvcore count, tools/_complexity.py) times 3 for
    forward +
    backward."""
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options)
    batch = cfg.train_dataloader.batch_size
    h, w = cfg.get('crop_size', (96, 96))
    out = dict(iters=iters, batch=batch, crop=[h, w], mpx=iters * batch * h * w / 1e6)
    try:
        from _complexity import build_segmentor, complexity, load_model_cfg
        info = complexity(build_segmentor(load_model_cfg(config, cfg_options=cfg_options)),
                          (h, w))
        out['gflops_per_image'] = info['flops'] / 1e9
        out['train_tflops'] = 3 * info['flops'] * batch * iters / 1e12
    except Exception as exc:  # the count is information only
        out['flops_error'] = repr(exc)
    return out


def _fmt(value):
    return '   -  ' if value is None else f'{value:6.2f}'


def summary_text(results: dict, modalities, header: str) -> str:
    """The summary table (one column per model) and where each model's outputs are."""
    names = list(results)
    lines = ['', '=' * 76, header, '=' * 76]
    lines.append(f'{"figure":<30}' + ''.join(f'{n:>16}' for n in names))

    def row(label, key):
        vals = [results[n]['metrics'].get(key) for n in names]
        lines.append(f'{label:<30}' + ''.join(f'{_fmt(v):>16}' for v in vals))

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
        work = r.get('work', {})
        flops = (f', {work["train_tflops"]:.1f} TFLOPs counted' if 'train_tflops' in work
                 else '')
        lines.append(f'{n}: train {r["train_s"] / 60:.1f} min ({work.get("iters")} it x '
                     f'{work.get("batch")} images of {work.get("crop", ["?"])[0]}x'
                     f'{work.get("crop", ["?", "?"])[1]} = {work.get("mpx", 0):.0f} Mpx{flops}),'
                     f' robustness test {r["test_s"]:.0f} s')
        lines.append(f'{" " * len(n)}  report: {r["log_dir"]}/robustness_report.md (+ .json, '
                     '.png)')
        if r.get('panels_dir'):
            lines.append(f'{" " * len(n)}  pictures: {r["panels_dir"]}/')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    print(f'[demo] machine: {cpu_name()}; logs go to each run\'s work dir, the console shows '
          'progress', flush=True)
    summary = make_synthetic_deliver(args.data_root, seed=args.seed)
    print(f'[demo] synthetic data at {args.data_root}: '
          f'{json.dumps(summary.get("num_samples", {}))}', flush=True)
    runs = [('equiseg', args.config)]
    if not args.skip_baseline:
        name = osp.splitext(osp.basename(args.baseline_config))[0].split('_')[0]
        runs.append((name if name != 'equiseg' else 'baseline', args.baseline_config))
    options = dict(args.cfg_options)
    work = {name: work_units(config, args.max_iters, options) for name, config in runs}
    for name, w in work.items():
        flops = (f'; {w["gflops_per_image"]:.2f} GFLOPs per image forward, about '
                 f'{w["train_tflops"]:.1f} TFLOPs to train' if 'train_tflops' in w else '')
        print(f'[demo] {name}: {w["iters"]} iterations x {w["batch"]} images of '
              f'{w["crop"][0]}x{w["crop"][1]} = {w["mpx"]:.0f} Mpx{flops}', flush=True)

    costs = [1.0] + [BASELINE_COST] * (len(runs) - 1)  # s/it relative to EQUISeg's

    def eta_after(index):
        """Seconds of the runs after ``index`` and of every robustness test still to come,
        scaled from run ``index``'s measured seconds per iteration."""
        def eta(sec_per_iter):
            unit = sec_per_iter / costs[index] * args.max_iters  # one EQUISeg run
            return unit * (sum(costs[index + 1:]) + TEST_FRACTION * (len(runs) - index))
        return eta

    results = {}
    for index, (name, config) in enumerate(runs):
        print(f'[demo] training + robustness test: {name} ({osp.basename(config)})', flush=True)
        hook = ProgressHook(interval=max(1, min(25, args.max_iters // 10)), name=name,
                            extra_eta=eta_after(index), job_start=t0 if index == 0 else None)
        results[name] = train_and_test(
            config, osp.join(args.work_dir, name), data_root=args.data_root, seed=args.seed,
            max_iters=args.max_iters, cfg_options=options, quiet=True, hooks=[hook],
            num_panels=args.num_panels)
        results[name]['work'] = work[name]
        print(f'[demo] {name}: mIoU {results[name]["metrics"].get("mm/mIoU", float("nan")):.2f},'
              f' EMM average {results[name]["metrics"].get("mm/EMM_avg", float("nan")):.2f} '
              f'({(time.time() - t0) / 60:.1f} min so far)', flush=True)
    modalities = list(Config.fromfile(args.config).modalities)
    text = summary_text(results, modalities,
                        f'EQUISeg on the synthetic DeLiVER-layout data (test split), seed '
                        f'{args.seed}, {args.max_iters} iterations')
    total = time.time() - t0
    text += f'\nTotal wall time: {total / 60:.1f} min on {cpu_name()}.\n'
    print(text, flush=True)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'summary.json'), 'w') as f:
        json.dump(dict(results, total_s=total, machine=cpu_name()), f, indent=2)
    with open(osp.join(args.work_dir, 'summary.txt'), 'w') as f:
        f.write(text)


if __name__ == '__main__':
    main()

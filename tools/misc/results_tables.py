"""Regenerate the Markdown tables of the docs from the results files they cite.

A generated table sits between two comment lines of a Markdown file; the first names the kind
of table and its source::

    <!-- table: sweep digits=1 col="EQUISeg|docs/results/sweep_h100_400it/results.json|equiseg-md0.0" -->
    | figure | EQUISeg-B0 |
    ...
    <!-- /table -->

    python tools/misc/results_tables.py docs/en/benchmarks.md            # rewrite the tables
    python tools/misc/results_tables.py --check docs/en/*.md README.md   # exit 1 if one is stale

Kinds and their options (``KEY=VALUE``, shell-quoted; paths relative to the repository root):

- ``sweep``: one column per ``col="LABEL|FILE|VARIANT"`` (repeated): ``FILE`` is a
  ``tools/sweep.py`` ``results.json`` (mean ± sample std over seeds of ``VARIANT``) or one
  run's ``result.json`` (no ``VARIANT``). ``rows=KEY,...`` (figure keys without ``mm/``;
  default: every figure), ``digits=N`` (default 2; balance figures keep 2), ``corner=TEXT``.
  ``*`` marks a mean that differs from the first column's by more than the two spreads
  together, as in ``tools/sweep.py``.
- ``benchmark``: one row per model of a ``tools/analysis_tools/benchmark.py`` JSON (the
  config-driven tool's, or that of release 8584a89): ``file=FILE``, ``size=N``,
  ``models=NAME,...``, ``labels="LABEL|..."``, ``columns=COL,...`` with COL one of
  ``params``, ``gflops``, ``latency``, ``ratio:MODEL``, ``keep_latency``, ``keep_ratio:MODEL``
  (release 8584a89's run with glibc keeping freed memory), ``memory``, ``ips``, ``train``,
  ``batch_ms``, ``ips_fp32``, ``amp_ms``, ``ips_amp``; ``ms_digits=N`` (default 0);
  ``names="MODEL=TEXT|..."`` (how ratio columns name their reference; default its label).
- ``flops``: one row per ``row="LABEL|FILE"`` (a JSON written by a ``run_get_flops.py`` of
  ``docs/results/``): parameters, GFLOPs (``digits=N``, default 1), the branches, the neck (and
  its share) and the decode head.
- ``train``: one row per variant of ``tools/analysis_tools/benchmark.py --train`` JSONs
  (``file=FILE``, repeated; ``labels="ROW=TEXT|..."`` renames config labels): seconds per iteration,
  peak memory above the resident state, both as ratios to the config's plain row, and the
  state (parameters + AdamW moments).
- ``absent``: the rows of a ``docs/results/absent_branches_cpu/run_absent_branches.py`` JSON
  (``file=FILE``): latency per setting of present sensors and its ratio to all present, for
  each timed mode.
- ``metafile``: the models of an OpenMMLab ``metafile.yaml`` (``file=FILE``), with their
  config and results file linked relative to the Markdown file.
"""
import argparse
import difflib
import json
import os.path as osp
import re
import shlex
import sys
from typing import Callable, Dict, List

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BLOCK = re.compile(r'^<!-- table: (?P<spec>.*?) -->\n(?P<body>.*?)^<!-- /table -->$',
                   re.MULTILINE | re.DOTALL)
_MODALITY_ORDER = ('rgb', 'depth', 'event', 'lidar')


def _load(path: str):
    with open(osp.join(ROOT, path)) as f:
        if path.endswith(('.yaml', '.yml')):
            import yaml
            return yaml.safe_load(f)
        return json.load(f)


def _options(spec: str) -> tuple:
    words = shlex.split(spec)
    options: Dict[str, List[str]] = {}
    for word in words[1:]:
        key, sep, value = word.partition('=')
        if not sep:
            raise ValueError(f'table option {word!r} is not KEY=VALUE (in "{spec}")')
        options.setdefault(key, []).append(value)
    return words[0], options


def _one(options: dict, key: str, default=None) -> str:
    values = options.get(key)
    if not values:
        if default is None:
            raise ValueError(f'the table needs the option {key}=...')
        return default
    return values[-1]


def _row(cells: List[str]) -> str:
    return '| ' + ' | '.join(cells) + ' |'


# --- sweep ------------------------------------------------------------------------------------
def sweep_stats(path: str, variant: str = '') -> Dict[str, tuple]:
    """``{figure: (mean, std, n)}`` of one variant of a sweep's ``results.json``, or of one
    run's ``result.json`` (std 0, n 1); figure keys without the ``mm/`` prefix."""
    data = _load(path)
    if 'stats' in data:
        if variant not in data['stats']:
            raise ValueError(f'{path} has no variant {variant!r}; it has {list(data["stats"])}')
        stats = {k: tuple(v) for k, v in data['stats'][variant].items()}
    else:
        stats = {k: (float(v), 0.0, 1) for k, v in data['metrics'].items()}
    return {k[len('mm/'):]: v for k, v in stats.items() if k.startswith('mm/')}


def _figure_label(key: str) -> str:
    fixed = {'mIoU': 'mIoU, all modalities', 'EMM_avg': 'EMM average',
             'balance_cv': 'balance_cv (0 = balanced)',
             'balance_min_max': 'balance_min_max (1 = balanced)',
             'balance_entropy': 'balance_entropy of Δ (1 = equal)'}
    if key in fixed:
        return fixed[key]
    if key.startswith('EMM_E@'):
        return f'E({key[len("EMM_E@"):]})'
    if key.startswith('single/'):
        return f'{key[len("single/"):]} alone'
    if key.startswith('delta/'):
        return f'contribution Δ {key[len("delta/"):]}'
    return key


def _default_rows(stats: Dict[str, tuple]) -> List[str]:
    def by_modality(prefix):
        names = [k[len(prefix):] for k in stats if k.startswith(prefix)]
        order = [m for m in _MODALITY_ORDER if m in names] + sorted(
            m for m in names if m not in _MODALITY_ORDER)
        return [prefix + m for m in order]
    head = [k for k in ('mIoU', 'EMM_avg', 'EMM_E@0.2', 'EMM_E@0.1', 'EMM_E@0.05') if k in stats]
    tail = [k for k in ('balance_cv', 'balance_min_max', 'balance_entropy') if k in stats]
    return head + by_modality('single/') + by_modality('delta/') + tail


def sweep_table(options: dict, md_dir: str) -> str:
    columns = []
    for col in options.get('col', []):
        parts = col.split('|')
        if len(parts) not in (2, 3):
            raise ValueError(f'col={col!r}: give LABEL|FILE|VARIANT or LABEL|FILE')
        columns.append((parts[0], sweep_stats(parts[1], parts[2] if len(parts) == 3 else '')))
    if not columns:
        raise ValueError('a sweep table needs at least one col=LABEL|FILE|VARIANT')
    digits = int(_one(options, 'digits', '2'))
    rows = (_one(options, 'rows', '').split(',') if options.get('rows')
            else _default_rows(columns[0][1]))
    ref = columns[0][1]
    lines = [_row([_one(options, 'corner', 'figure')] + [c[0] for c in columns]),
             '|---' * (len(columns) + 1) + '|']
    for key in rows:
        cells = [_figure_label(key)]
        for label, stats in columns:
            if key not in stats:
                cells.append('–')
                continue
            mean, std, n = stats[key]
            d = max(digits, 2) if key.startswith('balance') else digits  # ratios in [0, 1]
            if n == 1:
                cells.append(f'{mean:.{d}f}')
                continue
            r_mean, r_std, r_n = ref.get(key, (None, None, 0))
            mark = '*' if (stats is not ref and r_n > 1
                           and abs(mean - r_mean) > std + r_std) else ''
            cells.append(f'{mean:.{d}f} ± {std:.{d}f}{mark}')
        lines.append(_row(cells))
    return '\n'.join(lines)


# --- benchmark --------------------------------------------------------------------------------
def benchmark_table(options: dict, md_dir: str) -> str:
    path = _one(options, 'file')
    data = _load(path)
    size = _one(options, 'size')
    results = data['results'][size]
    keep = (data.get('other_allocators') or {}).get('keep', {}).get('results', {}).get(size, {})
    models = (_one(options, 'models').split(',') if options.get('models') else list(results))
    labels = (_one(options, 'labels').split('|') if options.get('labels')
              else [data.get('labels', {}).get(m, m) for m in models])
    if len(labels) != len(models):
        raise ValueError(f'{len(labels)} labels for {len(models)} models in the table of {path}')
    ms = int(_one(options, 'ms_digits', '0'))
    label_of = dict(zip(models, labels))
    label_of.update(item.split('=', 1) for item in _one(options, 'names', '').split('|') if item)

    def span(stats):
        return (f'{stats["median"] * 1e3:.{ms}f} ({stats["min"] * 1e3:.0f}–'
                f'{stats["max"] * 1e3:.0f})')

    def ratio(rows, model, other):
        return f'{rows[model]["latency_s"]["median"] / rows[other]["latency_s"]["median"]:.2f}'

    def column(name: str) -> tuple:
        kind, _, other = name.partition(':')
        simple: Dict[str, tuple] = {
            'params': ('params', lambda m: f'{results[m]["params"] / 1e6:.2f} M'),
            'gflops': ('GFLOPs', lambda m: f'{results[m]["flops"] / 1e9:.1f}'),
            'latency': ('ms, median (min–max)', lambda m: span(results[m]['latency_s'])),
            'keep_latency': ('glibc keeps freed memory: ms',
                             lambda m: span(keep[m]['latency_s'])),
            'memory': ('peak forward memory',
                       lambda m: f'{results[m]["peak_memory_bytes"] / 2**20:.0f} MiB'),
            'ips': ('images/s fp32 / AMP', lambda m: f'{results[m]["images_per_s"]:.1f} / '
                    f'{results[m]["images_per_s_amp"]:.1f}'),
            'train': ('train iteration s',
                      lambda m: f'{results[m]["train_iter_s"]["median"]:.3f}'),
            'batch_ms': ('fp32: ms per batch, median (min–max)',
                         lambda m: span(results[m]['latency_s'])),
            'ips_fp32': ('images/s', lambda m: f'{results[m]["images_per_s"]:.1f}'),
            'amp_ms': ('AMP: ms per batch',
                       lambda m: f'{results[m]["latency_amp_s"]["median"] * 1e3:.{ms}f}'),
            'ips_amp': ('images/s', lambda m: f'{results[m]["images_per_s_amp"]:.1f}'),
        }
        if kind == 'ratio':
            return f'× {label_of.get(other, other)}', lambda m: ratio(results, m, other)
        if kind == 'keep_ratio':
            return f'× {label_of.get(other, other)}', lambda m: ratio(keep, m, other)
        if kind not in simple:
            raise ValueError(f'unknown benchmark column {name!r}; allowed: '
                             f'{sorted(simple) + ["ratio:MODEL", "keep_ratio:MODEL"]}')
        return simple[kind]

    cols = [column(c) for c in _one(options, 'columns').split(',')]
    lines = [_row([f'{size}×{size}'] + [c[0] for c in cols]), '|---' * (len(cols) + 1) + '|']
    for model, label in zip(models, labels):
        lines.append(_row([label] + [c[1](model) for c in cols]))
    return '\n'.join(lines)


# --- flops ------------------------------------------------------------------------------------
def flops_table(options: dict, md_dir: str) -> str:
    d = int(_one(options, 'digits', '1'))
    lines = [_row(['model', 'params', 'GFLOPs', 'backbone', 'neck (share)', 'decode head']),
             '|---' * 6 + '|']
    for row in options.get('row', []):
        label, path = row.split('|')
        info = _load(path)
        parts = info['parts']
        branches = [v['flops'] for k, v in parts.items() if k.startswith('backbone')]
        backbone = (f'{len(branches)} × {branches[0] / 1e9:.{d}f}'
                    if len(branches) > 1 and len(set(branches)) == 1
                    else f'{sum(branches) / 1e9:.{d}f}')
        neck = parts.get('neck')
        neck_cell = (f'{neck["flops"] / 1e9:.{d}f} ({neck["flops"] / info["flops"]:.0%})'
                     if neck else '–')
        lines.append(_row([label, f'{info["params_inference"] / 1e6:.2f} M',
                           f'{info["flops"] / 1e9:.{d}f}', backbone, neck_cell,
                           f'{parts["decode_head"]["flops"] / 1e9:.{d}f}']))
    return '\n'.join(lines)


# --- train ------------------------------------------------------------------------------------
def train_table(options: dict, md_dir: str) -> str:
    files = [_load(path) for path in options.get('file', [])]
    if not files:
        raise ValueError('a train table needs at least one file=FILE')
    settings = {(tuple(d['settings']['crop']), d['settings']['batch']) for d in files}
    if len(settings) != 1:
        raise ValueError(f'the files of a train table differ in crop or batch: {settings}')
    (h, w), batch = settings.pop()
    rename = dict(item.split('=', 1) for item in _one(options, 'labels', '').split('|') if item)
    lines = [_row([f'{h}×{w}, batch {batch}', 'levers', 's / iteration, median (min–max)',
                   '× plain', 'peak MiB above state', '× plain', 'state MiB']),
             '|---' * 7 + '|']
    for name, row in ((k, v) for d in files for k, v in d['results'].items()):
        config, _, levers = name.rpartition(' [')
        it, mem, ratio = row['train_iter_s'], row['peak_memory_bytes'], row['ratio']
        lines.append(_row([
            rename.get(config, config), levers.rstrip(']'),
            f'{it["median"]:.2f} ({it["min"]:.2f}–{it["max"]:.2f})',
            f'{ratio["train_iter"]:.2f}',
            '–' if mem is None else f'{mem / 2**20:.0f}',
            '–' if ratio['peak_memory'] is None else f'{ratio["peak_memory"]:.2f}',
            f'{row["state_bytes"] / 2**20:.0f}']))
    return '\n'.join(lines)


# --- absent -----------------------------------------------------------------------------------
def absent_table(options: dict, md_dir: str) -> str:
    data = _load(_one(options, 'file'))
    h, w = data['size']
    names = {'test_step': 'inference (test_step)', 'tensor': 'tensor mode'}
    modes = list(data['timed'])
    head = [f'{h}×{w}, batch {data["batch"]}']
    for mode in modes:
        head += [f'{names.get(mode, mode)}: ms, median (min–max)', '× all present']
    lines = [_row(head), '|---' * len(head) + '|']
    for row in data['results']:
        cells = [row['setting']]
        for mode in modes:
            lat = row[mode]['latency_s']
            cells += [f'{lat["median"] * 1e3:.0f} ({lat["min"] * 1e3:.0f}–'
                      f'{lat["max"] * 1e3:.0f})', f'{row[mode]["ratio_to_all_present"]:.2f}']
        lines.append(_row(cells))
    return '\n'.join(lines)


# --- metafile ---------------------------------------------------------------------------------
def metafile_table(options: dict, md_dir: str) -> str:
    data = _load(_one(options, 'file'))

    def link(path):
        return osp.relpath(osp.join(ROOT, path), md_dir)

    lines = [_row(['model', 'config', 'trained on', 'mIoU', 'EMM avg', 'E(0.2)', 'results']),
             '|---' * 7 + '|']
    for model in data['Models']:
        meta, metrics = model['Metadata'], model['Results']['Metrics']

        def cell(key):
            value = metrics.get(key)
            if value is None:
                return '–'
            std = metrics.get(f'{key} std')
            return f'{value:.2f}' + (f' ± {std:.2f}' if std is not None else '')
        config = model['Config']
        options_note = (' ' + ' '.join(f'`{k}={v}`' for k, v in meta['cfg-options'].items())
                        if meta.get('cfg-options') else '')
        lines.append(_row([
            model['Name'], f'[{osp.basename(config)}]({link(config)}){options_note}',
            f'{meta["Training Resources"]}, {meta["Seeds"]}',
            cell('mIoU'), cell('EMM avg'), cell('E(0.2)'),
            f'[{osp.basename(osp.dirname(meta["Results file"]))}]({link(meta["Results file"])})'
        ]))
    return '\n'.join(lines)


KINDS: Dict[str, Callable[[dict, str], str]] = dict(
    sweep=sweep_table, benchmark=benchmark_table, flops=flops_table, train=train_table,
    absent=absent_table, metafile=metafile_table)


def render(text: str, md_path: str) -> str:
    """``text`` with every generated table rewritten from its source."""
    md_dir = osp.dirname(osp.abspath(md_path))

    def replace(match):
        kind, options = _options(match.group('spec'))
        if kind not in KINDS:
            raise ValueError(f'{md_path}: unknown table kind {kind!r}; allowed: {sorted(KINDS)}')
        return f'<!-- table: {match.group("spec")} -->\n{KINDS[kind](options, md_dir)}\n' \
               '<!-- /table -->'

    return BLOCK.sub(replace, text)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Rewrite the generated tables of Markdown files from the results files '
        'they cite (see the module docstring for the table syntax).')
    parser.add_argument('files', nargs='+', metavar='FILE.md', help='Markdown files')
    parser.add_argument('--check', action='store_true',
                        help='change nothing; exit 1 and show a diff where a table is stale')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    stale = []
    for path in args.files:
        with open(path) as f:
            text = f.read()
        new = render(text, path)
        if new == text:
            continue
        if args.check:
            stale.append(path)
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(True), new.splitlines(True), path, f'{path} (regenerated)'))
        else:
            with open(path, 'w') as f:
                f.write(new)
            print(f'rewrote the tables of {path}')
    if stale:
        print(f'stale tables in {stale}; run python tools/misc/results_tables.py '
              + ' '.join(stale))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())

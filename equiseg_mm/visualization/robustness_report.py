"""JSON, Markdown and PNG report of a ``ModalityBalanceMetric`` summary (matplotlib: PNG only)."""
import json
import math
import os
import os.path as osp
from typing import List

REPORT_NAME = 'robustness_report'

__all__ = ['REPORT_NAME', 'write_robustness_report']


def _num(value, digits: int = 2) -> str:
    """A figure for a Markdown cell ('-' for missing or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def _clean(obj):
    """Replace NaN by None, recursively, so the JSON file is standard JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _table(header: List[str], rows: List[list]) -> List[str]:
    """Lines of a Markdown table."""
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(_num(c) if not isinstance(c, str) else c for c in row) + ' |'
              for row in rows]
    return lines + ['']


def _markdown(summary: dict) -> str:
    figures, settings = summary['figures'], summary['settings']
    mods = summary['modalities']
    lines = ['# Robustness and modality-balance report', '',
             f'Modalities: {", ".join(mods) if mods else "-"}; classes: '
             f'{len(summary["classes"])}.', '']

    lines += ['## Summary', '']
    head = [k for k in figures if '/mIoU/' not in k and not k.startswith('mIoU/')
            and not k.startswith(('delta/', 'single/'))
            and not any(k.startswith(f'{g}/') for g in summary['groups'])]
    lines += _table(['figure', 'value'],
                    [[k, _num(figures[k], 4 if k.startswith('balance_') else 2)] for k in head])

    emm = settings.get('EMM', {})
    subsets: List[str] = []
    for per in settings.values():
        subsets += [s for s in per if s not in subsets]
    subsets.sort(key=lambda s: -(emm[s]['mIoU'] if s in emm and not math.isnan(
        emm[s]['mIoU']) else -1.0))
    lines += ['## mIoU per modality subset (sorted by EMM mIoU)', '']
    rows = []
    for s in subsets:
        nmod = next(per[s]['num_modalities'] for per in settings.values() if s in per)
        rows.append([s, nmod] + [per[s]['mIoU'] if s in per else None
                                 for per in settings.values()])
    lines += _table(['subset', 'modalities'] + list(settings), rows)

    contrib = [[m, figures.get(f'delta/{m}'), figures.get(f'single/{m}')] for m in mods
               if f'delta/{m}' in figures or f'single/{m}' in figures]
    if contrib:
        lines += ['## Modality contributions', '']
        lines += _table(['modality', 'delta = mIoU(full) - mIoU(all but m)',
                         'single = mIoU({m})'], contrib)

    if summary['groups']:
        lines += ['## Groups (clean full set)', '']
        rows = [[key, value, d['num_samples'], d['mIoU'], d['aAcc']]
                for key, per in summary['groups'].items() for value, d in per.items()]
        lines += _table(['key', 'value', 'samples', 'mIoU', 'aAcc'], rows)

    if 'full' in emm:
        lines += ['## Per-class IoU (clean full set)', '']
        lines += _table(['class', 'IoU'], [[c, v] for c, v in emm['full']['IoU'].items()])

    lines += ['## Definitions', '']
    lines += [f'- `{k}`: {v}' for k, v in summary['definitions'].items()] + ['']
    return '\n'.join(lines)


def _png(summary: dict, path: str) -> None:
    # A bare Figure with the Agg canvas: no pyplot, so no global backend or figure state.
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    figures = summary['figures']
    mods = summary['modalities']
    emm = summary['settings'].get('EMM', {})
    items = sorted(((s, d['mIoU'], d['num_modalities']) for s, d in emm.items()),
                   key=lambda t: -(t[1] if not math.isnan(t[1]) else -1.0))
    fig = Figure(figsize=(13, 5))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[2, 1]))
    cmap = colormaps['viridis']
    n = max(len(mods), 1)
    colours = {k: cmap((k - 1) / max(n - 1, 1)) for k in range(1, n + 1)}
    if items:
        left.bar(range(len(items)), [0 if math.isnan(v) else v for _, v, _ in items],
                 color=[colours.get(k, 'grey') for _, _, k in items])
        left.set_xticks(range(len(items)))
        left.set_xticklabels([s for s, _, _ in items], rotation=60, ha='right', fontsize=8)
        handles = [Patch(color=colours[k], label=f'{k} modalit{"y" if k == 1 else "ies"}')
                   for k in sorted({k for _, _, k in items if k in colours})]
        if 'EMM_avg' in figures:
            line = left.axhline(figures['EMM_avg'], color='crimson', linestyle='--')
            line.set_label(f'EMM average {figures["EMM_avg"]:.2f}')
            handles.append(line)
        left.legend(handles=handles, fontsize=8)
    left.set_ylabel('mIoU (%)')
    left.set_title('mIoU per modality subset (EMM)')

    deltas = [figures.get(f'delta/{m}') for m in mods]
    singles = [figures.get(f'single/{m}') for m in mods]
    if any(v is not None for v in deltas + singles):
        x = list(range(len(mods)))
        right.bar([i - 0.2 for i in x], [v or 0 for v in deltas], width=0.4,
                  label='delta = mIoU(full) - mIoU(all but m)')
        right.bar([i + 0.2 for i in x], [v or 0 for v in singles], width=0.4,
                  label='single-modality mIoU')
        right.set_xticks(x)
        right.set_xticklabels(mods)
        right.axhline(0, color='black', linewidth=0.5)
        right.legend(fontsize=8)
        right.set_ylabel('mIoU (%)')
    else:
        right.text(0.5, 0.5, 'needs missing-modality passes\n(MissingModalityTestLoop)',
                   ha='center', va='center', transform=right.transAxes)
        right.set_axis_off()
    right.set_title('Per-modality contribution')
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_robustness_report(summary: dict, out_dir: str) -> List[str]:
    """Write ``robustness_report.{json,md,png}`` into ``out_dir``.

    Args:
        summary (dict): ``modalities``, ``classes``, ``figures`` (the flat figures),
            ``settings`` (setting -> subset -> mIoU, aAcc, num_samples, num_modalities, IoU per
            class), ``groups`` (key -> value -> mIoU, aAcc, num_samples) and ``definitions``.
        out_dir (str): Folder to write into; created if needed.

    Returns:
        list[str]: The paths written (JSON, Markdown, PNG).
    """
    os.makedirs(out_dir, exist_ok=True)
    base = osp.join(out_dir, REPORT_NAME)
    with open(base + '.json', 'w') as f:
        json.dump(_clean(summary), f, indent=2)
    with open(base + '.md', 'w') as f:
        f.write(_markdown(summary))
    _png(summary, base + '.png')
    return [base + '.json', base + '.md', base + '.png']

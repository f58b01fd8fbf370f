"""Missing-modality robustness (EMM, RMM, NM of Liao et al., CVPRW 2025) and modality balance."""
import logging
import math
import os.path as osp
import warnings
from collections import OrderedDict
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS

from ...utils import check_names, modality_names, modality_subsets, subset_name

__all__ = ['ModalityBalanceMetric']

FULL = 'full'
EMM = 'EMM'
#: Report order of the settings: EMM, then RMM@r, then NM@d (each by its number), then others.
_SETTING_KINDS = (EMM, 'RMM', 'NM')

DEFINITIONS = OrderedDict([
    ('mIoU(s)', 'mmseg mIoU (nanmean over classes of I/U, in %) with the modalities outside '
                'subset s zeroed after normalisation; s = full is the whole set'),
    ('EMM_avg', 'mean over the evaluated non-empty subsets s of mIoU(s)'),
    ('EMM_E@p', 'sum_s w_s mIoU(s) / sum_s w_s, w_s = p^k_s (1-p)^(N-k_s), '
                'k_s = number of modalities missing in s'),
    ('delta/<m>', 'mIoU(full) - mIoU(all modalities except m)'),
    ('single/<m>', 'mIoU({m})'),
    ('balance_min_max', 'min_m single_m / max_m single_m (1 = balanced)'),
    ('balance_cv', 'std_m(single_m) / mean_m(single_m), population std (0 = balanced)'),
    ('balance_entropy', '-sum_m q_m ln q_m / ln N, q_m = max(delta_m, 0) / sum_j max(delta_j, 0) '
                        '(1 = every modality contributes equally, 0 = one modality carries all; '
                        'absent when no modality has a positive delta)'),
    ('<setting>/...', 'the same figures for RMM@r (each element of a missing modality zeroed '
                      'with probability r) and NM@d (salt-and-pepper noise of density d on every '
                      'modality); an RMM setting without its own full pass uses the EMM full '
                      'set, which is the same pass (nothing is missing)'),
    ('<key>/<value>/mIoU', 'mIoU of the clean full set over the samples whose metainfo <key> '
                           'is <value> (e.g. condition/night, case/motionblur)'),
])


def _setting_order(setting: str) -> tuple:
    """Sort key of a setting name: EMM, RMM@r, NM@d (by r and d), then any other by name."""
    kind, _, value = setting.partition('@')
    rank = _SETTING_KINDS.index(kind) if kind in _SETTING_KINDS else len(_SETTING_KINDS)
    try:
        number = float(value)
    except ValueError:
        number = float('inf')
    return rank, number, setting


@METRICS.register_module()
class ModalityBalanceMetric(BaseMetric):
    """mIoU per modality subset, missing-modality robustness and modality balance.

    ``DEFINITIONS`` defines the figures (percentages as mmseg's ``IoUMetric``, rounded to 2
    decimals, ratios to 4): ``mIoU`` / ``aAcc`` (clean full set), ``mIoU/<subset>``,
    ``EMM_avg``, ``EMM_E@<p>``, with N >= 2 ``delta/<m>``, ``single/<m>`` and
    ``balance_{min_max,cv,entropy}``; the same under ``<setting>/`` (e.g. ``RMM@0.25``);
    ``<key>/<value>/mIoU`` per ``group_keys``. A figure is absent when its passes were not run.

    :meth:`process` keeps one confusion histogram per sample (``img_path``, ``sample_idx``) and
    pass; with ``out_dir``, ``robustness_report.{json,md,png}`` is written there.

    Args:
        modalities (Sequence[str], optional): Modality names in stacking order. Defaults to
            None: those of ``dataset_meta``, else of the samples, else of the subsets seen.
        ignore_index (int): Label ignored in evaluation. Defaults to 255.
        expectation_ps (Sequence[float]): Each p of ``EMM_E@p``. Defaults to (0.2, 0.1, 0.05).
        group_keys (Sequence[str]): Keys of per-group mIoU. Defaults to ('condition', 'case').
        out_dir (str, optional): Folder of the report files. Defaults to None.
        report (bool): Whether to write the report files. Defaults to True.
        collect_device (str): Device used to collect results across ranks. Defaults to 'cpu'.
        prefix (str, optional): Prefix of the metric names. Defaults to None, i.e. 'mm'.
        collect_dir (str, optional): Folder to collect results across ranks. Defaults to None.
    """

    default_prefix: Optional[str] = 'mm'

    def __init__(self,
                 modalities: Optional[Sequence[str]] = None,
                 ignore_index: int = 255,
                 expectation_ps: Sequence[float] = (0.2, 0.1, 0.05),
                 group_keys: Sequence[str] = ('condition', 'case'),
                 out_dir: Optional[str] = None,
                 report: bool = True,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        if modalities is not None:
            if isinstance(modalities, str) or not all(isinstance(m, str) for m in modalities):
                raise TypeError(f'modalities must be a list of names such as [\'rgb\', '
                                f'\'depth\'] or None, got {modalities!r}')
            modalities = list(modality_names(modalities))
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f'ignore_index must be an int, got {ignore_index!r}')
        if any(isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1
               for p in expectation_ps):
            raise ValueError(f'expectation_ps must hold probabilities in (0, 1), got '
                             f'{list(expectation_ps)}')
        if isinstance(group_keys, str) or not all(isinstance(k, str) for k in group_keys):
            raise TypeError(f'group_keys must be a list of metainfo keys such as '
                            f'[\'condition\', \'case\'], got {group_keys!r}')
        if out_dir is not None and not isinstance(out_dir, str):
            raise TypeError(f'out_dir must be a folder path or None, got {out_dir!r}')
        if not isinstance(report, bool):
            raise TypeError(f'report must be True or False, got {report!r}')
        self.modalities = modalities
        self.ignore_index = ignore_index
        self.expectation_ps = tuple(float(p) for p in expectation_ps)
        self.group_keys = tuple(group_keys)
        self.out_dir = out_dir
        self.report = report
        self._sample_modalities: Optional[List[str]] = None
        # sample identity -> its records in self.results (more than one for a repeated sample)
        self._records: Dict[Hashable, List[dict]] = {}

    def _known_modalities(self) -> Optional[List[str]]:
        """The modalities from the argument, the dataset metainfo or the samples, if any."""
        if self.modalities is not None:
            return self.modalities
        meta = self.dataset_meta or {}
        if meta.get('modalities'):
            return list(meta['modalities'])
        return self._sample_modalities

    def _canonical_subset(self, name: Any) -> str:
        """Order a subset name as the modalities and name the whole set 'full'."""
        name = str(name)
        if name == FULL:
            return FULL
        mods = self._known_modalities()
        if mods is None:
            return name
        parts = [p for p in name.split('+') if p]
        check_names(parts, mods, f'modality in eval_subset {name!r}')
        if not parts or len(set(parts)) != len(parts):
            raise ValueError(f'eval_subset {name!r} must name each modality at most once, '
                             f'joined by \'+\', or be \'{FULL}\'')
        if set(parts) == set(mods):
            return FULL
        return subset_name([m for m in mods if m in parts])

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Keep one confusion histogram per sample and evaluation pass.

        Args:
            data_batch (Any): A batch of data from the dataloader (not used).
            data_samples (Sequence[dict]): The model outputs, as dicts: ``pred_sem_seg``,
                ``gt_sem_seg``, ``img_path`` / ``sample_idx``, ``eval_setting``, ``eval_subset``.

        Raises:
            ValueError: ``dataset_meta`` has no classes, a subset names an unknown modality, or
                a sample of a missing-modality pass has neither ``img_path`` nor ``sample_idx``.
        """
        if not self.dataset_meta or 'classes' not in self.dataset_meta:
            raise ValueError('ModalityBalanceMetric needs dataset_meta with \'classes\'; '
                             'the test loop sets it from the dataset metainfo')
        num_classes = len(self.dataset_meta['classes'])
        for sample in data_samples:
            if self._sample_modalities is None and sample.get('modalities'):
                self._sample_modalities = list(sample['modalities'])
            key = (str(sample.get('eval_setting', EMM)),
                   self._canonical_subset(sample.get('eval_subset', FULL)))
            identity = (sample.get('img_path'), sample.get('sample_idx'))
            identity = None if identity == (None, None) else identity
            if identity is None and key != (EMM, FULL):
                raise ValueError(
                    f'ModalityBalanceMetric matches the passes of a sample by its img_path or '
                    f'sample_idx metainfo, but a prediction of pass {key} has neither; give '
                    f'the dataset samples a sample_idx (mmengine\'s BaseDataset does)')
            pred = sample['pred_sem_seg']['data'].squeeze()
            label = sample['gt_sem_seg']['data'].squeeze().to(pred)
            areas = IoUMetric.intersect_and_union(pred, label, num_classes, self.ignore_index)
            hist = torch.stack(areas).double().numpy()
            self._record_of(identity, key, sample)['hists'][key] = hist

    def _record_of(self, identity: Optional[Hashable], key: Tuple[str, str],
                   sample: dict) -> dict:
        """The record of ``sample`` that has no histogram for ``key`` yet (a new one if none)."""
        records = self._records.setdefault(identity, []) if identity is not None else []
        for record in records:
            if key not in record['hists']:
                return record
        groups = {k: str(sample[k]) for k in self.group_keys if sample.get(k) is not None}
        record = dict(hists={}, groups=groups)
        records.append(record)
        self.results.append(record)
        return record

    def evaluate(self, size: int) -> dict:
        """Compute the figures over ``size`` samples and reset (see ``BaseMetric``)."""
        self._records = {}
        return super().evaluate(size)

    @staticmethod
    def _scores(hist: np.ndarray) -> Tuple[float, float, np.ndarray]:
        """(mIoU %, aAcc %, per-class IoU %) of summed areas, with mmseg's conventions."""
        t = torch.from_numpy(hist)
        with np.errstate(invalid='ignore', divide='ignore'), warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            ret = IoUMetric.total_area_to_metrics(t[0], t[1], t[2], t[3], ['mIoU'])
            iou = np.asarray(ret['IoU'], dtype=np.float64) * 100
            miou = float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float('nan')
        return miou, float(ret['aAcc']) * 100, iou

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Compute every figure from the per-sample histograms.

        Args:
            results (list): The per-sample records of every rank.

        Returns:
            dict[str, float]: The figures of the class docstring.
        """
        classes = list(self.dataset_meta['classes'])
        totals: Dict[Tuple[str, str], np.ndarray] = OrderedDict()
        counts: Dict[Tuple[str, str], int] = {}
        group_totals: Dict[Tuple[str, str], np.ndarray] = OrderedDict()
        group_counts: Dict[Tuple[str, str], int] = {}
        for record in results:
            for key, hist in record['hists'].items():
                totals[key] = totals.get(key, 0) + hist
                counts[key] = counts.get(key, 0) + 1
                if key == (EMM, FULL):
                    for gk, gv in record['groups'].items():
                        gkey = (gk, gv)
                        group_totals[gkey] = group_totals.get(gkey, 0) + hist
                        group_counts[gkey] = group_counts.get(gkey, 0) + 1

        settings = sorted({setting for setting, _ in totals}, key=_setting_order)
        mods = self._known_modalities()
        if mods is None:  # those named by the evaluated subsets, in order of appearance
            mods = []
            for _, s in totals:
                mods += [p for p in s.split('+') if s != FULL and p and p not in mods]
        mods = list(mods)
        n = len(mods)
        order = {FULL: -1}
        order.update({subset_name(s): i for i, s in enumerate(modality_subsets(mods))
                      if len(s) < n})

        scores = {key: self._scores(hist) for key, hist in totals.items()}
        metrics: Dict[str, float] = OrderedDict()
        details: Dict[str, Dict[str, dict]] = OrderedDict()
        warn = []
        for setting in settings:
            pre = '' if setting == EMM else f'{setting}/'
            subsets = sorted((s for st, s in totals if st == setting),
                             key=lambda s: (order.get(s, len(order)), s))
            details[setting] = OrderedDict()
            for s in subsets:
                miou, aacc, iou = scores[(setting, s)]
                details[setting][s] = dict(
                    mIoU=round(miou, 2), aAcc=round(aacc, 2), num_samples=counts[(setting, s)],
                    num_modalities=n if s == FULL else len(s.split('+')),
                    IoU=OrderedDict((c, None if math.isnan(v) else round(float(v), 2))
                                    for c, v in zip(classes, iou)))
                if s == FULL:
                    metrics[f'{pre}mIoU'] = miou
                    metrics[f'{pre}aAcc'] = aacc
                else:
                    metrics[f'{pre}mIoU/{s}'] = miou
            miou_of = {s: scores[(setting, s)][0] for s in subsets}
            if FULL not in miou_of and (EMM, FULL) in scores:
                miou_of[FULL] = scores[(EMM, FULL)][0]  # RMM: no own full pass (same pass)
            if not any(s != FULL for s in miou_of):
                continue
            values = np.array(list(miou_of.values()))
            if len(miou_of) < 2 ** n - 1:
                warn.append(f'{setting}: EMM figures over {len(miou_of)} of {2 ** n - 1} subsets')
            metrics[f'{pre}EMM_avg'] = float(np.mean(values))
            missing = np.array([0 if s == FULL else n - len(s.split('+')) for s in miou_of])
            for p in self.expectation_ps:
                w = p ** missing * (1 - p) ** (n - missing)
                metrics[f'{pre}EMM_E@{p:g}'] = float(np.sum(w * values) / np.sum(w))
            if setting == EMM and n >= 2:
                metrics.update(self._contributions(miou_of, mods))

        groups = OrderedDict()
        for (gk, gv), hist in sorted(group_totals.items(),
                                     key=lambda kv: (self.group_keys.index(kv[0][0]), kv[0][1])):
            miou, aacc, _ = self._scores(hist)
            metrics[f'{gk}/{gv}/mIoU'] = miou
            groups.setdefault(gk, OrderedDict())[gv] = dict(
                mIoU=round(miou, 2), aAcc=round(aacc, 2), num_samples=group_counts[(gk, gv)])

        out = OrderedDict()
        for key, value in metrics.items():
            digits = 4 if key.startswith('balance_') else 2
            out[key] = float('nan') if math.isnan(value) else round(float(value), digits)
        summary = dict(modalities=mods, classes=classes, figures=dict(out), settings=details,
                       groups=groups, definitions=dict(DEFINITIONS))
        self._log(summary, warn)
        if self.report and self.out_dir:
            from ...visualization.robustness_report import write_robustness_report
            paths = write_robustness_report(summary, self.out_dir)
            print_log(f'robustness report written to {osp.dirname(paths[0])}: '
                      + ', '.join(osp.basename(p) for p in paths), logger='current')
        return out

    @staticmethod
    def _contributions(miou_of: Dict[str, float], mods: List[str]) -> Dict[str, float]:
        """delta/<m>, single/<m> and the balance summary (see the class docstring)."""
        out: Dict[str, float] = OrderedDict()
        deltas = {}
        for m in mods:
            rest = subset_name([x for x in mods if x != m])
            if FULL in miou_of and rest in miou_of:
                deltas[m] = miou_of[FULL] - miou_of[rest]
                out[f'delta/{m}'] = deltas[m]
        singles = {m: miou_of[m] for m in mods if m in miou_of}
        out.update((f'single/{m}', v) for m, v in singles.items())
        n = len(mods)
        if len(singles) == n:
            s = np.array([singles[m] for m in mods])
            if s.max() > 0:
                out['balance_min_max'] = float(s.min() / s.max())
            if s.mean() > 0:
                out['balance_cv'] = float(s.std() / s.mean())
        if len(deltas) == n:
            pos = np.clip(np.array([deltas[m] for m in mods]), 0, None)
            if pos.sum() > 0:
                q = pos / pos.sum()
                q = q[q > 0]
                out['balance_entropy'] = max(0.0, float(-(q * np.log(q)).sum() / np.log(n)))
        return out

    def _log(self, summary: dict, warn: List[str]) -> None:
        """Log the per-subset table and the headline figures."""
        from prettytable import PrettyTable
        logger: MMLogger = MMLogger.get_current_instance()
        settings = summary['settings']
        subsets: List[str] = []
        for per in settings.values():
            subsets += [s for s in per if s not in subsets]
        table = PrettyTable()
        table.field_names = ['subset', 'modalities'] + list(settings)
        for s in subsets:
            nmod = next(per[s]['num_modalities'] for per in settings.values() if s in per)
            table.add_row([s, nmod] + [per[s]['mIoU'] if s in per else '-'
                                       for per in settings.values()])
        print_log('mIoU per modality subset and setting:\n' + table.get_string(), logger)
        rest = {k: v for k, v in summary['figures'].items()
                if not k.startswith('mIoU/') and '/mIoU/' not in k}
        if rest:
            fig = PrettyTable()
            fig.field_names = ['figure', 'value']
            fig.align['figure'] = 'l'
            fig.add_rows([[k, v] for k, v in rest.items()])
            print_log('robustness and balance figures:\n' + fig.get_string(), logger)
        for line in warn:
            print_log(line, logger, level=logging.WARNING)

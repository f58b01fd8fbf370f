"""Missing-modality robustness and modality-balance metric.

The robustness figures are those of the sensor-failure benchmark of Liao et al.
("Benchmarking Multi-modal Semantic Segmentation under Sensor Failures", CVPRW 2025: the EMM
average and expectation, RMM, NM), which EQUISeg's "robustness score" is read as; the
per-modality contributions and the balance summary answer EQUISeg's own question, whether every
modality contributes. :class:`ModalityBalanceMetric` defines each figure.

The metric keeps one small record per sample: a confusion histogram (mmseg's
``IoUMetric.intersect_and_union``: intersection, union, prediction and label areas per class)
for every evaluation pass the sample went through, keyed by ``(eval_setting, eval_subset)``
from the data sample's metainfo, plus the sample's group values (``condition``, ``case``...).
The passes of one sample are folded into its record by the sample's identity (its ``img_path``
and ``sample_idx`` metainfo), whatever order or batching they come in, so ``len(self.results)``
stays the number of samples and mmengine's ``collect_results`` (which cuts the list at the
dataset size) stays correct, also in distributed runs.

Without the tags (an ordinary mmseg test run with the stock ``TestLoop``) every prediction is
the clean full set: the metric then reports the plain ``mIoU`` / ``aAcc`` and per-group mIoU.
"""
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

from ...utils import modality_subsets, subset_name

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
                        '(1 = every modality contributes equally, 0 = one modality carries all)'),
    ('<setting>/...', 'the same figures for RMM@r (each element of a missing modality zeroed '
                      'with probability r) and NM@d (salt-and-pepper noise of density d on every '
                      'modality); an RMM setting without its own full pass uses the EMM full '
                      'set, which is the same pass (nothing is missing)'),
    ('<key>/<value>/mIoU', 'mIoU of the clean full set over the samples whose metainfo <key> '
                           'is <value> (e.g. condition/night, case/motionblur)'),
])


def _fmt(value: float) -> str:
    """Format a number for a metric key: ``0.25 -> '0.25'``, ``0.1 -> '0.1'``."""
    return f'{float(value):g}'


def _setting_order(setting: str) -> tuple:
    """Sort key of a setting name: EMM, RMM@r, NM@d (by r and d), then any other by name."""
    kind, _, value = setting.partition('@')
    rank = _SETTING_KINDS.index(kind) if kind in _SETTING_KINDS else len(_SETTING_KINDS)
    try:
        number = float(value)
    except ValueError:
        number = float('inf')
    return rank, number, setting


def _sample_identity(sample: dict) -> Optional[Hashable]:
    """``(img_path, sample_idx)`` of a data sample, or None when it has neither."""
    key = (sample.get('img_path'), sample.get('sample_idx'))
    return None if key == (None, None) else key


@METRICS.register_module()
class ModalityBalanceMetric(BaseMetric):
    """mIoU per modality subset, missing-modality robustness and modality balance.

    Every figure is in percent like mmseg's ``IoUMetric`` (nanmean over classes; a class with
    neither ground truth nor prediction is NaN and excluded) unless it is a ratio. With N
    modalities, ``S`` the evaluated non-empty modality subsets and ``k_s`` the number of
    modalities missing in ``s``:

    - ``mIoU`` / ``aAcc``: the clean full set; ``mIoU/<subset>`` (e.g. ``mIoU/rgb+depth``) for
      every other evaluated subset.
    - ``EMM_avg = (1/|S|) sum_{s in S} mIoU(s)``.
    - ``EMM_E@p = sum_s w_s mIoU(s) / sum_s w_s`` with ``w_s = p^k_s (1-p)^(N-k_s)``, for every
      ``p`` in ``expectation_ps``.
    - ``delta/<m> = mIoU(full) - mIoU(all \\ {m})`` and ``single/<m> = mIoU({m})``.
    - Balance summary (present when every modality has the figure it needs, N >= 2):
      ``balance_min_max = min_m single_m / max_m single_m`` (1 = balanced);
      ``balance_cv = std_m(single_m) / mean_m(single_m)`` (population std; 0 = balanced);
      ``balance_entropy = -sum_m q_m ln q_m / ln N`` with
      ``q_m = max(delta_m, 0) / sum_j max(delta_j, 0)`` (1 = every modality's removal costs
      the same, 0 = only one modality matters; absent when no removal costs anything).
    - Other settings, e.g. ``RMM@0.25`` or ``NM@0.05``, give ``<setting>/mIoU``,
      ``<setting>/aAcc``, ``<setting>/mIoU/<subset>``, ``<setting>/EMM_avg`` and
      ``<setting>/EMM_E@p`` from their own passes. A setting without its own full pass (the
      RMM passes of the test loop) uses the EMM full set in its averages: with nothing missing
      the two are the same pass. Contributions and balance are EMM figures only.
    - ``<key>/<value>/mIoU`` for every key of ``group_keys`` present in the samples' metainfo,
      over the clean full set (e.g. ``condition/night/mIoU``, ``case/motionblur/mIoU``).

    Figures that need missing-modality passes are absent when only the full set was evaluated,
    so the metric also works as a plain metric in an ordinary mmseg test run.

    The passes of a sample are matched by the sample's identity, the ``img_path`` and
    ``sample_idx`` of its metainfo (mmseg datasets set both), not by the order or batching in
    which :meth:`process` sees them: any order gives the same figures. A sample whose identity
    comes again with a pass its record already has is counted as a new sample (a dataset that
    lists a frame twice). A sample with neither key can only be evaluated on the clean full set
    (``eval_setting`` EMM, ``eval_subset`` full); each such prediction is a sample. Percentages are
    rounded to 2 decimals (as mmseg), ratios to 4; every figure is computed from unrounded
    values. With ``out_dir`` set and ``report=True``, ``compute_metrics`` also writes
    ``robustness_report.{json,md,png}`` there
    (:func:`~equiseg_mm.visualization.write_robustness_report`).

    Args:
        modalities (Sequence[str], optional): Modality names in stacking order. If None they are
            read from ``dataset_meta['modalities']``, else from the data samples' ``modalities``
            metainfo, else from the subset names seen. Defaults to None.
        ignore_index (int): Label ignored in evaluation. Defaults to 255.
        expectation_ps (Sequence[float]): Missing probabilities p of the EMM expectation, each
            in (0, 1). Defaults to (0.2, 0.1, 0.05).
        group_keys (Sequence[str]): Metainfo keys to report per-group mIoU for (when present).
            Defaults to ('condition', 'case').
        out_dir (str, optional): Folder for the report files. The test loop sets it to the
            run's log dir when it is None. Defaults to None.
        report (bool): Whether to write the report files when ``out_dir`` is known.
            Defaults to True.
        collect_device (str): Device used to collect results across ranks. Defaults to 'cpu'.
        prefix (str, optional): Prefix of the metric names. Defaults to None, i.e. 'mm'.
        collect_dir (str, optional): Folder used to collect results across ranks on cpu.
            Defaults to None.
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
            if len(modalities) == 0 or len(set(modalities)) != len(modalities):
                raise ValueError(f'modalities must be non-empty and unique, got '
                                 f'{list(modalities)}')
            modalities = list(modalities)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f'ignore_index must be an int, got {ignore_index!r}')
        ps = []
        for p in expectation_ps:
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1:
                raise ValueError(f'expectation_ps must hold probabilities in (0, 1), got '
                                 f'{list(expectation_ps)}')
            ps.append(float(p))
        if isinstance(group_keys, str) or not all(isinstance(k, str) for k in group_keys):
            raise TypeError(f'group_keys must be a list of metainfo keys such as '
                            f'[\'condition\', \'case\'], got {group_keys!r}')
        if out_dir is not None and not isinstance(out_dir, str):
            raise TypeError(f'out_dir must be a folder path or None, got {out_dir!r}')
        if not isinstance(report, bool):
            raise TypeError(f'report must be True or False, got {report!r}')
        self.modalities = modalities
        self.ignore_index = ignore_index
        self.expectation_ps = tuple(ps)
        self.group_keys = tuple(group_keys)
        self.out_dir = out_dir
        self.report = report
        self._sample_modalities: Optional[List[str]] = None
        # sample identity -> its records in self.results (more than one for a repeated sample)
        self._records: Dict[Hashable, List[dict]] = {}

    # ------------------------------------------------------------------ process
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
        unknown = [p for p in parts if p not in mods]
        if unknown or not parts or len(set(parts)) != len(parts):
            raise ValueError(f'eval_subset {name!r} names unknown or repeated modalities '
                             f'{unknown}; allowed values are {list(mods)} joined by \'+\', '
                             f'or \'{FULL}\'')
        if set(parts) == set(mods):
            return FULL
        return subset_name([m for m in mods if m in parts])

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Keep one confusion histogram per sample and evaluation pass.

        Each prediction goes into the record of its sample, found by the sample's ``img_path``
        and ``sample_idx``: one record per sample, whatever order or batching the passes come
        in.

        Args:
            data_batch (Any): A batch of data from the dataloader (not used).
            data_samples (Sequence[dict]): The model outputs, as dicts, with ``pred_sem_seg``,
                ``gt_sem_seg``, ``img_path`` and/or ``sample_idx``, and optionally
                ``eval_setting`` / ``eval_subset`` and the group keys in their metainfo.

        Raises:
            ValueError: ``dataset_meta`` has no classes, a subset tag names an unknown modality,
                or a prediction of a pass other than the clean full set has neither
                ``img_path`` nor ``sample_idx``.
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
            identity = _sample_identity(sample)
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

    # ---------------------------------------------------------------- compute
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

    def _resolve_modalities(self, subset_names: Sequence[str]) -> List[str]:
        """Known modalities, or those named by the evaluated subsets in order of appearance."""
        mods = self._known_modalities()
        if mods is not None:
            return list(mods)
        out: List[str] = []
        for name in subset_names:
            if name != FULL:
                out += [p for p in name.split('+') if p and p not in out]
        return out

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Compute every figure from the per-sample histograms.

        Args:
            results (list): The per-sample records of every rank.

        Returns:
            dict[str, float]: The figures, named as in the class docstring.
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
        mods = self._resolve_modalities([s for _, s in totals])
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
            names = [s for s in miou_of]
            values = np.array([miou_of[s] for s in names])
            if len(names) < 2 ** n - 1:
                warn.append(f'{setting}: EMM figures over {len(names)} of {2 ** n - 1} subsets')
            metrics[f'{pre}EMM_avg'] = float(np.mean(values))
            missing = np.array([0 if s == FULL else n - len(s.split('+')) for s in names])
            for p in self.expectation_ps:
                w = p ** missing * (1 - p) ** (n - missing)
                metrics[f'{pre}EMM_E@{_fmt(p)}'] = float(np.sum(w * values) / np.sum(w))
            if setting == EMM and n >= 2:
                metrics.update(self._contributions(miou_of, mods))

        group_totals = OrderedDict(sorted(
            group_totals.items(), key=lambda kv: (self.group_keys.index(kv[0][0]), kv[0][1])))
        for (gk, gv), hist in group_totals.items():
            metrics[f'{gk}/{gv}/mIoU'] = self._scores(hist)[0]

        out = OrderedDict()
        for key, value in metrics.items():
            digits = 4 if key.startswith('balance_') else 2
            out[key] = float('nan') if math.isnan(value) else round(float(value), digits)

        groups = OrderedDict()
        for (gk, gv), hist in group_totals.items():
            miou, aacc, _ = self._scores(hist)
            groups.setdefault(gk, OrderedDict())[gv] = dict(
                mIoU=round(miou, 2), aAcc=round(aacc, 2), num_samples=group_counts[(gk, gv)])
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
        deltas, singles = {}, {}
        for m in mods:
            rest = subset_name([x for x in mods if x != m])
            if FULL in miou_of and rest in miou_of:
                deltas[m] = miou_of[FULL] - miou_of[rest]
                out[f'delta/{m}'] = deltas[m]
        for m in mods:
            if m in miou_of:
                singles[m] = miou_of[m]
                out[f'single/{m}'] = singles[m]
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
                out['balance_entropy'] = float(-(q * np.log(q)).sum() / np.log(n))
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
            for k, v in rest.items():
                fig.add_row([k, v])
            print_log('robustness and balance figures:\n' + fig.get_string(), logger)
        for line in warn:
            print_log(line, logger, level=logging.WARNING)

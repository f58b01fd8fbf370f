"""Test loop that evaluates every modality subset, RMM and NM in one pass over the data."""
import contextlib
import os.path as osp
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from mmengine.evaluator import Evaluator
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import TestLoop
from mmengine.runner.amp import autocast
from mmengine.structures import BaseDataElement
from mmseg.registry import LOOPS
from torch.utils.data import DataLoader

from ..evaluation import ModalityBalanceMetric
from ..models import MultiModalMiT, get_multimodal_preprocessor, reuse_branch_outputs
from ..utils import modality_subsets, subset_name
from ..utils.misc import unwrap_model

__all__ = ['MissingModalityTestLoop']


class _Pass(NamedTuple):
    """One evaluation pass: its tags and the data preprocessor's protocol setting."""
    setting: str
    subset: str
    missing: Tuple[str, ...]
    ratio: float
    noise: float


def _pop_losses(outputs: list, losses: Optional[Dict[str, HistoryBuffer]]) -> list:
    """The outputs without a trailing loss element (mmengine's test-loss convention: a last
    ``BaseDataElement`` whose only key is ``loss``), whose values are added to ``losses``."""
    if not (outputs and isinstance(outputs[-1], BaseDataElement)
            and outputs[-1].keys() == ['loss']):
        return outputs
    loss = outputs[-1].loss
    if losses is not None:
        for name, value in loss.items():
            values = [value] if isinstance(value, torch.Tensor) else list(value)
            for v in values:
                if isinstance(v, torch.Tensor):
                    losses.setdefault(name, HistoryBuffer()).update(v.item())
    return outputs[:-1]


def _mean_losses(losses: Dict[str, HistoryBuffer], stage: str) -> Dict[str, float]:
    """Each loss's mean, plus ``<stage>_loss``: the sum of those whose name holds 'loss'."""
    out = {name: buffer.mean() for name, buffer in losses.items()}
    out[f'{stage}_loss'] = sum(v for k, v in out.items() if 'loss' in k)
    return out


def _check_fractions(values: Sequence[float], key: str) -> Tuple[float, ...]:
    if isinstance(values, (str, int, float)):
        values = [values]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise ValueError(f'{key} must hold numbers in (0, 1], got {list(values)}')
        out.append(float(v))
    if len(set(out)) != len(out):
        raise ValueError(f'{key} has repeated values: {out}')
    return tuple(out)


@LOOPS.register_module()
class MissingModalityTestLoop(TestLoop):
    """Test loop for the missing-modality (EMM, RMM) and noisy-modality (NM) protocols.

    The dataloader is iterated **once**. Each batch goes through every pass in turn: the loop
    calls ``model.test_step`` under the pass's setting of the data preprocessor
    (:meth:`MultiModalSegDataPreProcessor.protocol`, which restores the preprocessor afterwards,
    also when a pass raises), tags each output's metainfo with ``eval_setting`` and
    ``eval_subset`` and hands it to the evaluator. The passes per batch are:

    - ``EMM``: every subset of ``subsets`` (the full set, tagged ``'full'``, first), missing
      modalities zeroed entirely (``missing_ratio=1.0``);
    - ``RMM@r`` for each ``r`` in ``rmm_ratios``: every proper subset, each element of the
      missing modalities zeroed with probability ``r`` (``missing_ratio=r``);
    - ``NM@d`` for each ``d`` in ``nm_densities``: the full set with salt-and-pepper noise of
      density ``d`` on every modality (``noise_density=d``).

    Only the clean full-set pass goes to every metric of the evaluator (a stock ``IoUMetric``
    next to it reports the ordinary mIoU); the other passes go to the
    :class:`~equiseg_mm.evaluation.ModalityBalanceMetric` instances only, at least one of which
    the evaluator must hold. Hooks see one iteration per batch (mmengine's logger hook logs the
    progress and the ETA); ``after_test_iter`` gets the clean full-set outputs. A metric with
    ``out_dir=None`` and ``report=True`` writes its report into ``runner.log_dir``
    (``work_dir/<timestamp>``). A test loss that ``test_step`` returns as a trailing element
    (mmengine's convention: a last data element whose only key is ``loss``) is averaged by the
    loop itself and logged with the metrics.

    Use it from a config run by ``tools/test.py``::

        test_cfg = dict(type='MissingModalityTestLoop', rmm_ratios=(0.25, 0.5, 0.75),
                        nm_densities=(0.05, 0.1, 0.2))
        test_evaluator = dict(type='ModalityBalanceMetric')

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): The test dataloader or its config.
        evaluator (Evaluator | dict | list): The evaluator or its config.
        fp16 (bool): Whether to test under autocast. Defaults to False.
        subsets (Sequence[Sequence[str]], optional): Modality subsets of the EMM passes, e.g.
            ``[['rgb'], ['rgb', 'depth']]``. None means every non-empty subset of the data
            preprocessor's modalities (2^N - 1). The full set is always evaluated.
            Defaults to None.
        rmm_ratios (Sequence[float]): Element-wise missing probabilities of the RMM passes,
            each in (0, 1]. Defaults to ().
        nm_densities (Sequence[float]): Salt-and-pepper densities of the NM passes, each in
            (0, 1]. Defaults to ().
        reuse_branch_outputs (bool): When the backbone is a :class:`MultiModalMiT`, run the
            test under :func:`~equiseg_mm.models.reuse_branch_outputs`, which reuses each
            branch's output across the passes of a batch: over the EMM passes a branch runs
            twice per batch (its input and zeros) instead of once per subset (RMM/NM passes
            change the inputs and run). The results are bit-identical. Other backbones run
            every pass in full. Defaults to True.
    """

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 evaluator: Union[Evaluator, Dict, List],
                 fp16: bool = False,
                 subsets: Optional[Sequence[Sequence[str]]] = None,
                 rmm_ratios: Sequence[float] = (),
                 nm_densities: Sequence[float] = (),
                 reuse_branch_outputs: bool = True) -> None:
        super().__init__(runner, dataloader, evaluator, fp16)
        self.reuse_branch_outputs = bool(reuse_branch_outputs)
        self.spec = get_multimodal_preprocessor(self.runner.model, 'MissingModalityTestLoop').spec
        self.modalities: List[str] = list(self.spec.names)
        self.subsets = self._check_subsets(subsets)
        self.rmm_ratios = _check_fractions(rmm_ratios, 'rmm_ratios')
        self.nm_densities = _check_fractions(nm_densities, 'nm_densities')

        metrics = getattr(self.evaluator, 'metrics', [])
        self._balance_metrics = [m for m in metrics if isinstance(m, ModalityBalanceMetric)]
        if not self._balance_metrics:
            raise ValueError(
                'MissingModalityTestLoop needs a ModalityBalanceMetric in test_evaluator '
                f'(got {[type(m).__name__ for m in metrics]}); add '
                "dict(type='ModalityBalanceMetric') to test_evaluator")
        for metric in self._balance_metrics:
            if metric.modalities is not None and list(metric.modalities) != self.modalities:
                raise ValueError(f'ModalityBalanceMetric.modalities {list(metric.modalities)} '
                                 f'differ from the data preprocessor modalities '
                                 f'{self.modalities}')
        self._balance_evaluator = Evaluator(self._balance_metrics)
        self.passes = self._build_passes()

    # ----------------------------------------------------------------- set-up
    def _check_subsets(self, subsets) -> List[Tuple[str, ...]]:
        """Validated subsets in modality order, the full set first, without repeats."""
        if subsets is None:
            return modality_subsets(self.spec.names)
        if isinstance(subsets, str) or any(isinstance(s, str) for s in subsets):
            raise ValueError(f'subsets must be a list of lists of modality names such as '
                             f"[['rgb'], ['rgb', 'depth']], got {subsets!r}")
        out = [self.spec.names]
        for subset in subsets:
            if len(subset) == 0:
                raise ValueError(f'subsets must not hold an empty subset, got {subsets!r}; '
                                 f'allowed names are {self.modalities}')
            ordered = self.spec.select(subset, 'modality in subsets')
            if ordered not in out:
                out.append(ordered)
        return out

    def _build_passes(self) -> List[_Pass]:
        full = self.spec.names

        def missing(subset):
            return tuple(m for m in full if m not in subset)

        def name(subset):
            return 'full' if subset == full else subset_name(subset)

        passes = [_Pass('EMM', name(s), missing(s), 1.0, 0.0) for s in self.subsets]
        for r in self.rmm_ratios:
            passes += [_Pass(f'RMM@{r:g}', name(s), missing(s), r, 0.0)
                       for s in self.subsets if s != full]
        for d in self.nm_densities:
            passes.append(_Pass(f'NM@{d:g}', 'full', (), 1.0, d))
        return passes

    # -------------------------------------------------------------------- run
    def run(self) -> dict:
        """Run every pass over the test set once and evaluate.

        Returns:
            dict: The metrics of every metric of the evaluator.
        """
        self.runner.call_hook('before_test')
        self.runner.call_hook('before_test_epoch')
        self.runner.model.eval()
        self.test_loss.clear()

        counts: Dict[str, int] = {}
        for p in self.passes:
            counts[p.setting] = counts.get(p.setting, 0) + 1
        print_log(
            f'MissingModalityTestLoop: modalities {self.modalities}; '
            f'{len(self.dataloader.dataset)} samples in {len(self.dataloader)} batches; '
            f'{len(self.passes)} forward passes per batch ('
            + ', '.join(f'{k} x{v}' for k, v in counts.items()) + '); EMM subsets: '
            + ', '.join(p.subset for p in self.passes if p.setting == 'EMM'),
            logger='current')

        start = time.time()
        with contextlib.ExitStack() as stack:
            backbone = getattr(unwrap_model(self.runner.model), 'backbone', None)
            if self.reuse_branch_outputs and isinstance(backbone, MultiModalMiT):
                # every subset of a batch feeds each branch either its input or zeros
                stack.enter_context(reuse_branch_outputs(backbone))
            for idx, data_batch in enumerate(self.dataloader):
                self.run_iter(idx, data_batch)

        reports = []
        for metric in self._balance_metrics:
            if metric.report and metric.out_dir is None:
                metric.out_dir = self.runner.log_dir
                reports.append(metric)
        try:
            metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        finally:
            written = [m.out_dir for m in reports]
            for metric in reports:
                metric.out_dir = None
        where = ''.join(f'; report: {osp.join(d, "robustness_report.{json,md,png}")}'
                        for d in dict.fromkeys(written))
        print_log(f'MissingModalityTestLoop: {len(self.passes)} passes x '
                  f'{len(self.dataloader)} batches in {time.time() - start:.1f}s{where}',
                  'current')

        if self.test_loss:
            metrics.update(_mean_losses(self.test_loss, 'test'))
        self.runner.call_hook('after_test_epoch', metrics=metrics)
        self.runner.call_hook('after_test')
        return metrics

    @torch.no_grad()
    def run_iter(self, idx: int, data_batch: dict) -> None:
        """Run every pass on one batch.

        Args:
            idx (int): The batch index.
            data_batch (dict): A batch from the dataloader.
        """
        self.runner.call_hook('before_test_iter', batch_idx=idx, data_batch=data_batch)
        preprocessor = get_multimodal_preprocessor(self.runner.model, 'MissingModalityTestLoop')
        clean_outputs = None
        for i, p in enumerate(self.passes):
            with preprocessor.protocol(missing=p.missing, ratio=p.ratio, noise=p.noise), \
                    autocast(enabled=self.fp16):
                outputs = self.runner.model.test_step(data_batch)
            # the clean full set (first): every metric, and the test loss
            outputs = _pop_losses(outputs, self.test_loss if i == 0 else None)
            for sample in outputs:
                tags = dict(eval_setting=p.setting, eval_subset=p.subset)
                if isinstance(sample, dict):
                    sample.update(tags)
                else:
                    sample.set_metainfo(tags)
            if i == 0:
                clean_outputs = outputs
                self.evaluator.process(data_samples=outputs, data_batch=data_batch)
            else:
                self._balance_evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook('after_test_iter', batch_idx=idx, data_batch=data_batch,
                              outputs=clean_outputs)

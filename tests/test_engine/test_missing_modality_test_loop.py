"""MissingModalityTestLoop end to end through a real mmengine Runner, with a fake segmentor.

The fake world: 3 modalities (rgb, depth, event), label maps of 2x4 pixels

    GT = [[0, 0, 0, 0],
          [1, 1, 1, 1]]

and a fake segmentor that gets a column right only when the modality that "sees" it reaches the
model: rgb sees columns 0 and 1, depth column 2, event column 3. A wrong column is predicted
flipped (1 on top, 0 below). With w wrong columns both classes have I = 4 - w and
U = 4 + w, so the summed IoU over samples is sum(4 - w_i) / sum(4 + w_i) for each class.
At night the dataset's rgb channel is black (rgb never reaches the model). The fake
preprocessor (a MultiModalSegDataPreProcessor whose ``forward`` is replaced; the loop sets it
with the real ``protocol``) zeroes a missing modality when ``missing_ratio >= 0.5`` (so RMM@0.25
loses nothing and RMM@0.75 behaves as EMM) and, when ``noise_density > 0.1``, marks the rgb
channel as noisy, which costs column 0.
"""
import json
import uuid

import pytest
import torch
from torch.utils.data import Dataset

import equiseg_mm  # noqa: F401,I001  (first: compat fixes, registration)
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement, PixelData
from mmseg.structures import SegDataSample

from equiseg_mm.engine import MissingModalityTestLoop
from equiseg_mm.models import MultiModalSegDataPreProcessor

MODS = ('rgb', 'depth', 'event')
COLUMNS = dict(rgb=(0, 1), depth=(2, ), event=(3, ))
GT = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]])
# sample -> (condition, case)
SAMPLES = [('night', 'clean'), ('night', 'motionblur'), ('sun', 'clean'), ('sun', 'clean')]


class TinyDataset(Dataset):
    metainfo = dict(classes=('a', 'b'), modalities=MODS)

    def __init__(self):
        self.loads = []

    def __len__(self):
        return len(SAMPLES)

    def __getitem__(self, idx):
        self.loads.append(idx)
        condition, case = SAMPLES[idx]
        inputs = torch.ones(3, 2, 4)
        if condition == 'night':
            inputs[0] = 0  # black rgb
        sample = SegDataSample(gt_sem_seg=PixelData(data=GT[None].clone()))
        sample.set_metainfo(dict(sample_idx=idx, condition=condition, case=case))
        return dict(inputs=inputs, data_samples=sample)


class FakePreprocessor(MultiModalSegDataPreProcessor):

    def __init__(self):
        super().__init__(modalities=MODS, channels=[1, 1, 1])
        self.calls = []

    def forward(self, data, training=False):
        data = self.cast_data(data)
        self.calls.append((tuple(self.missing_modalities), self.missing_ratio,
                           self.noise_density))
        inputs = torch.stack(data['inputs']).float()
        if self.missing_ratio >= 0.5:
            for m in self.missing_modalities:
                inputs[:, MODS.index(m)] = 0
        if self.noise_density > 0.1:
            inputs[:, 0] = torch.where(inputs[:, 0] > 0, 0.5, inputs[:, 0])
        return dict(inputs=inputs, data_samples=data['data_samples'])


class FakeSegmentor(BaseModel):

    def __init__(self):
        super().__init__(data_preprocessor=FakePreprocessor())
        self.fail_on = None

    def forward(self, inputs, data_samples=None, mode='predict'):
        if self.fail_on is not None and \
                tuple(self.data_preprocessor.missing_modalities) == self.fail_on:
            raise RuntimeError('boom')
        for x, sample in zip(inputs, data_samples):
            gt = sample.gt_sem_seg.data[0]
            pred = gt.clone()
            for i, m in enumerate(MODS):
                seen = bool((x[i] > 0).all())
                noisy = bool((x[i] == 0.5).all())
                for c in COLUMNS[m]:
                    if not seen or (noisy and c == 0):
                        pred[:, c] = 1 - gt[:, c]
            sample.pred_sem_seg = PixelData(data=pred[None])
        return data_samples


def _runner(tmp_path, test_cfg, evaluator=None):
    return Runner(
        model=FakeSegmentor(),
        work_dir=str(tmp_path),
        experiment_name=f'mmtl_{uuid.uuid4().hex[:8]}',
        test_dataloader=dict(dataset=TinyDataset(), batch_size=2, num_workers=0,
                             sampler=dict(type='DefaultSampler', shuffle=False)),
        test_cfg=test_cfg,
        test_evaluator=evaluator or [dict(type='ModalityBalanceMetric'), dict(type='IoUMetric')],
        default_scope='mmseg',
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)),
        log_level='WARNING')


def _wrong(condition, present, noisy=False):
    """Wrong columns of a sample whose model sees the modalities ``present``."""
    seen = set(present) - ({'rgb'} if condition == 'night' else set())
    return sum(len(COLUMNS[m]) for m in MODS if m not in seen) + (
        1 if noisy and 'rgb' in seen else 0)


def _miou(wrongs):
    """Both classes have IoU sum(4 - w) / sum(4 + w), in percent."""
    return sum(4 - w for w in wrongs) / sum(4 + w for w in wrongs) * 100


def test_loop_end_to_end(tmp_path):
    runner = _runner(tmp_path, dict(type='MissingModalityTestLoop', rmm_ratios=(0.25, 0.75),
                                    nm_densities=(0.05, 0.2)))
    metrics = runner.test()
    loop = runner.test_loop
    assert isinstance(loop, MissingModalityTestLoop)
    dataset = loop.dataloader.dataset
    pre = runner.model.data_preprocessor

    # the dataloader was iterated once; each batch went through 7 + 2*6 + 2 = 21 passes
    assert sorted(dataset.loads) == [0, 1, 2, 3]
    assert len(loop.passes) == 21
    assert len(pre.calls) == 2 * 21
    subsets = [('rgb', 'depth', 'event'), ('rgb', 'depth'), ('rgb', 'event'),
               ('depth', 'event'), ('rgb', ), ('depth', ), ('event', )]

    def missing(s):
        return tuple(m for m in MODS if m not in s)

    expected_calls = [(missing(s), 1.0, 0.0) for s in subsets] \
        + [(missing(s), r, 0.0) for r in (0.25, 0.75) for s in subsets[1:]] \
        + [((), 1.0, 0.05), ((), 1.0, 0.2)]
    assert pre.calls == expected_calls * 2
    # the preprocessor attributes are restored
    assert (pre.missing_modalities, pre.missing_ratio, pre.noise_density) == ((), 1.0, 0.0)

    conds = [c for c, _ in SAMPLES]

    def emm(s, noisy=False):
        return _miou([_wrong(c, s, noisy) for c in conds])

    approx = lambda v: pytest.approx(v, abs=0.006)  # noqa: E731
    # full: night misses rgb (w = 2), sun sees all (w = 0): (2*2 + 2*4) / (2*6 + 2*4) = 60
    assert metrics['mm/mIoU'] == approx(emm(MODS)) == approx(60)
    assert metrics['mIoU'] == approx(60)  # the stock IoUMetric sees the clean full set only
    values = {s: emm(s) for s in subsets}
    for s in subsets[1:]:
        assert metrics['mm/mIoU/' + '+'.join(s)] == approx(values[s])
    assert metrics['mm/EMM_avg'] == approx(sum(values.values()) / 7)
    w = {s: 0.2 ** (3 - len(s)) * 0.8 ** len(s) for s in subsets}
    assert metrics['mm/EMM_E@0.2'] == approx(
        sum(w[s] * values[s] for s in subsets) / sum(w.values()))
    for m in MODS:
        rest = tuple(x for x in MODS if x != m)
        assert metrics[f'mm/delta/{m}'] == approx(values[MODS] - values[rest])
        assert metrics[f'mm/single/{m}'] == approx(values[(m, )])
    # depth alone: rgb (2 columns) and event (1) are wrong on every sample: w = 3 -> 1/7
    assert metrics['mm/single/depth'] == approx(1 / 7 * 100)
    assert metrics['mm/single/event'] == approx(1 / 7 * 100)
    # rgb alone: night w = 4 (rgb dark), sun w = 2: (0 + 0 + 2 + 2) / (8 + 8 + 6 + 6)
    assert metrics['mm/single/rgb'] == approx(4 / 28 * 100)
    # RMM@0.25 loses nothing: every subset is the full set; RMM@0.75 is EMM
    assert metrics['mm/RMM@0.25/EMM_avg'] == approx(values[MODS])
    assert metrics['mm/RMM@0.75/EMM_avg'] == approx(metrics['mm/EMM_avg'])
    # NM: 0.05 is harmless here, 0.2 costs column 0 on sun samples (night rgb is dark anyway)
    assert metrics['mm/NM@0.05/mIoU'] == approx(60)
    assert metrics['mm/NM@0.2/mIoU'] == approx(emm(MODS, noisy=True))
    assert metrics['mm/NM@0.2/mIoU'] == approx((2 * 2 + 2 * 3) / (2 * 6 + 2 * 5) * 100)
    # groups over the clean full set
    assert metrics['mm/condition/night/mIoU'] == approx(_miou([2, 2]))   # 33.33
    assert metrics['mm/condition/sun/mIoU'] == approx(100)
    assert metrics['mm/case/clean/mIoU'] == approx(_miou([2, 0, 0]))     # 10/14
    assert metrics['mm/case/motionblur/mIoU'] == approx(_miou([2]))

    # the report went to work_dir/<timestamp>
    out = tmp_path / runner.timestamp
    report = json.loads((out / 'robustness_report.json').read_text())
    assert report['figures']['EMM_avg'] == metrics['mm/EMM_avg']
    assert set(report['settings']) == {'EMM', 'RMM@0.25', 'RMM@0.75', 'NM@0.05', 'NM@0.2'}
    assert len(report['settings']['EMM']) == 7
    assert '| subset | modalities | EMM | RMM@0.25 | RMM@0.75 | NM@0.05 | NM@0.2 |' in \
        (out / 'robustness_report.md').read_text()
    assert (out / 'robustness_report.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert loop.evaluator.metrics[0].out_dir is None  # left as configured


def test_loop_subsets_and_restore_on_error(tmp_path):
    runner = _runner(tmp_path, dict(type='MissingModalityTestLoop',
                                    subsets=[['event', 'rgb'], ['depth']]))
    runner.model.fail_on = ('depth', )  # fails on the rgb+event pass (depth missing)
    pre = runner.model.data_preprocessor
    with pre.protocol(noise=0.01):  # a non-default value that must come back
        with pytest.raises(RuntimeError, match='boom'):
            runner.test()
        assert (pre.missing_modalities, pre.missing_ratio, pre.noise_density) == ((), 1.0, 0.01)

    runner.model.fail_on = None
    metrics = runner.test()
    loop = runner.test_loop
    assert [p.subset for p in loop.passes] == ['full', 'rgb+event', 'depth']
    assert {k for k in metrics if k.startswith('mm/mIoU/')} == {'mm/mIoU/rgb+event',
                                                               'mm/mIoU/depth'}


@pytest.mark.parametrize('cfg, error, text', [
    (dict(subsets=[['rgb', 'lidar']]), ValueError, r"\['lidar'\].*\['rgb', 'depth', 'event'\]"),
    (dict(subsets=['rgb']), ValueError, 'list of lists'),
    (dict(subsets=[[]]), ValueError, 'empty'),
    (dict(rmm_ratios=(0, )), ValueError, 'rmm_ratios'),
    (dict(nm_densities=(1.5, )), ValueError, 'nm_densities'),
])
def test_loop_bad_args(tmp_path, cfg, error, text):
    runner = _runner(tmp_path, dict(type='MissingModalityTestLoop', **cfg))
    with pytest.raises(error, match=text):
        runner.build_test_loop(runner._test_loop)


def test_loop_needs_balance_metric_and_protocol_preprocessor(tmp_path):
    runner = _runner(tmp_path, dict(type='MissingModalityTestLoop'),
                     evaluator=dict(type='IoUMetric'))
    with pytest.raises(ValueError, match='ModalityBalanceMetric'):
        runner.build_test_loop(runner._test_loop)
    runner = _runner(tmp_path, dict(type='MissingModalityTestLoop'))
    runner.model.data_preprocessor = BaseDataPreprocessor()
    with pytest.raises(TypeError, match=r'MissingModalityTestLoop needs .*'
                                        r'MultiModalSegDataPreProcessor.*BaseDataPreprocessor'):
        runner.build_test_loop(runner._test_loop)


def test_loop_reports_the_test_loss_of_the_clean_pass(tmp_path):
    """A model whose test_step appends a loss element (mmengine's convention): the loop strips
    it from every pass and reports the mean of the clean full-set pass's values."""
    runner = _runner(tmp_path, dict(type='MissingModalityTestLoop', subsets=[['rgb']]))
    model, step = runner.model, runner.model.test_step
    values = iter([1.0, 5.0, 3.0, 5.0])  # clean, rgb, clean, rgb

    def test_step(data):
        loss = BaseDataElement(loss=dict(loss_ce=torch.tensor(next(values))))
        return step(data) + [loss]

    model.test_step = test_step
    metrics = runner.test()
    assert metrics['loss_ce'] == pytest.approx(2.0)
    assert metrics['test_loss'] == pytest.approx(2.0)
    rgb_alone = _miou([_wrong(c, ('rgb', )) for c, _ in SAMPLES])
    assert metrics['mm/mIoU/rgb'] == pytest.approx(rgb_alone, abs=0.006)

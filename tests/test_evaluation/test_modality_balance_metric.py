"""ModalityBalanceMetric on hand-made predictions whose figures are worked out by hand.

Label maps are 2x3 with classes ('a', 'b', 'c'); class 'c' never occurs in the ground truth or
in a prediction, so its IoU is NaN and mmseg's nanmean leaves it out. The ground truth is

    GT = [[0, 0, 0],
          [1, 1, 1]]

and the predictions used below are (IoU_a, IoU_b worked out from intersection / union):

    A = GT                      a: 3/3,  b: 3/3              mIoU = 100
    B = [[0, 0, 0], [1, 1, 0]]  a: I=3, U=4 -> 3/4;  b: I=2, U=3 -> 2/3
    C = [[0, 1, 1], [1, 1, 1]]  a: I=1, U=3 -> 1/3;  b: I=3, U=5 -> 3/5
    D = [[0, 0, 0], [0, 0, 0]]  a: I=3, U=6 -> 1/2;  b: I=0, U=3 -> 0
    E = [[1, 1, 1], [0, 0, 0]]  a: 0;  b: 0                   mIoU = 0
"""
import json
import math

import numpy as np
import pytest
import torch

import equiseg_mm  # noqa: F401,I001  (first: compat fixes, registration)
from mmengine.evaluator import Evaluator
from mmengine.structures import PixelData
from mmseg.registry import METRICS
from mmseg.structures import SegDataSample

from equiseg_mm.evaluation import ModalityBalanceMetric
from equiseg_mm.utils import modality_subsets

CLASSES = ('a', 'b', 'c')
GT = [[0, 0, 0], [1, 1, 1]]
A = GT
B = [[0, 0, 0], [1, 1, 0]]
C = [[0, 1, 1], [1, 1, 1]]
D = [[0, 0, 0], [0, 0, 0]]
E = [[1, 1, 1], [0, 0, 0]]
M_A = 100.0
M_B = (3 / 4 + 2 / 3) / 2 * 100  # 70.833...
M_C = (1 / 3 + 3 / 5) / 2 * 100  # 46.666...
M_D = (1 / 2 + 0) / 2 * 100      # 25
M_E = 0.0


def _sample(pred, gt=GT, **meta):
    s = SegDataSample()
    s.gt_sem_seg = PixelData(data=torch.tensor(gt)[None])
    s.pred_sem_seg = PixelData(data=torch.tensor(pred)[None])
    s.set_metainfo(meta)
    return s


def _run(metric, batches, dataset_meta):
    """Feed ``batches`` as the test loop does: every pass of a batch in turn.

    ``batches`` is a list of lists of passes; a pass is a list of data samples. Samples without
    a ``sample_idx`` get their position in the data set (as mmengine's ``BaseDataset`` gives).
    """
    evaluator = Evaluator(metric)
    evaluator.dataset_meta = dataset_meta
    size = 0
    for passes in batches:
        data_batch = dict(inputs=[], data_samples=[])
        for samples in passes:
            for i, sample in enumerate(samples):
                if 'sample_idx' not in sample:
                    sample.set_metainfo(dict(sample_idx=size + i))
            evaluator.process(samples, data_batch)
        size += len(passes[0])
    return evaluator.evaluate(size)


def _entropy(contribs):
    pos = np.clip(np.array(contribs, dtype=float), 0, None)
    q = pos / pos.sum()
    q = q[q > 0]
    return float(-(q * np.log(q)).sum() / math.log(len(contribs)))


def test_two_modalities_by_hand():
    metric = ModalityBalanceMetric()  # modalities from dataset_meta
    # one sample; full = A, rgb alone = B, depth alone = C; RMM@0.5 rgb = A, depth = B;
    # NM@0.1 full = D
    passes = [[_sample(A, eval_setting='EMM', eval_subset='full')],
              [_sample(B, eval_setting='EMM', eval_subset='rgb')],
              [_sample(C, eval_setting='EMM', eval_subset='depth')],
              [_sample(A, eval_setting='RMM@0.5', eval_subset='rgb')],
              [_sample(B, eval_setting='RMM@0.5', eval_subset='depth')],
              [_sample(D, eval_setting='NM@0.1', eval_subset='full')]]
    res = _run(metric, [passes], dict(classes=CLASSES, modalities=('rgb', 'depth')))
    approx = lambda v: pytest.approx(v, abs=0.006)  # noqa: E731  (figures rounded to 2 dp)

    assert res['mm/mIoU'] == approx(100)
    assert res['mm/aAcc'] == approx(100)
    assert res['mm/mIoU/rgb'] == approx(M_B)
    assert res['mm/mIoU/depth'] == approx(M_C)
    # EMM average: (100 + 70.83 + 46.67) / 3 = 72.5
    assert res['mm/EMM_avg'] == approx((M_A + M_B + M_C) / 3)
    assert res['mm/EMM_avg'] == approx(72.5)
    # E(p): w_full = (1-p)^2, w_single = p (1-p);  p = 0.2: (0.64*100 + 0.16*117.5) / 0.96
    for p in (0.2, 0.1, 0.05):
        w0, w1 = (1 - p) ** 2, p * (1 - p)
        assert res[f'mm/EMM_E@{p:g}'] == approx((w0 * M_A + w1 * (M_B + M_C)) / (w0 + 2 * w1))
    assert res['mm/EMM_E@0.2'] == approx(86.25)
    # contributions: delta_m = full - mIoU(all but m); for N=2, all-but-rgb is {depth}
    assert res['mm/delta/rgb'] == approx(M_A - M_C)    # 53.33
    assert res['mm/delta/depth'] == approx(M_A - M_B)  # 29.17
    assert res['mm/single/rgb'] == approx(M_B)
    assert res['mm/single/depth'] == approx(M_C)
    # balance: min/max = 46.67/70.83 = 168/255; cv = (|B - C| / 2) / ((B + C) / 2)
    assert res['mm/balance_min_max'] == pytest.approx(168 / 255, abs=1e-4)
    assert res['mm/balance_cv'] == pytest.approx(abs(M_B - M_C) / (M_B + M_C), abs=1e-4)
    q = np.array([M_A - M_C, M_A - M_B]) / (2 * M_A - M_B - M_C)
    assert res['mm/balance_entropy'] == pytest.approx(
        -(q * np.log(q)).sum() / math.log(2), abs=1e-4)
    # RMM@0.5: no own full pass -> the EMM full set is used in its averages
    assert 'mm/RMM@0.5/mIoU' not in res
    assert res['mm/RMM@0.5/mIoU/rgb'] == approx(M_A)
    assert res['mm/RMM@0.5/mIoU/depth'] == approx(M_B)
    assert res['mm/RMM@0.5/EMM_avg'] == approx((M_A + M_A + M_B) / 3)  # 90.28
    assert res['mm/RMM@0.5/EMM_E@0.2'] == approx((0.64 * M_A + 0.16 * (M_A + M_B)) / 0.96)
    assert 'mm/RMM@0.5/delta/rgb' not in res  # contributions are EMM figures only
    # NM@0.1: only the full set
    assert res['mm/NM@0.1/mIoU'] == approx(M_D)
    assert 'mm/NM@0.1/EMM_avg' not in res
    assert all(isinstance(v, float) for v in res.values())


def test_three_modalities_by_hand():
    metric = ModalityBalanceMetric(expectation_ps=(0.1, ))
    mods = ['rgb', 'depth', 'event']
    tag = dict(modalities=mods)  # modalities from the samples' metainfo this time
    preds = {'full': A, 'rgb+depth': A, 'event+rgb': B, 'depth+event': C,
             'rgb': B, 'depth': D, 'event': E}
    passes = [[_sample(p, eval_subset=s, **tag)] for s, p in preds.items()]
    # 'rgb+depth+event' (the whole set) is the full set: not a subset of its own
    passes.insert(1, [_sample(A, eval_setting='NM@0.2', eval_subset='rgb+depth+event', **tag)])
    res = _run(metric, [passes], dict(classes=CLASSES))
    approx = lambda v: pytest.approx(v, abs=0.006)  # noqa: E731

    assert res['mm/mIoU/rgb+event'] == approx(M_B)  # 'event+rgb' in modality order
    assert res['mm/NM@0.2/mIoU'] == approx(100)
    assert 'mm/NM@0.2/mIoU/rgb+depth+event' not in res
    m = dict(full=M_A, rd=M_A, re=M_B, de=M_C, r=M_B, d=M_D, e=M_E)
    # EMM average over the 7 subsets: 413.33 / 7
    assert res['mm/EMM_avg'] == approx(sum(m.values()) / 7)
    assert res['mm/EMM_avg'] == approx(59.05)
    # E(0.1): w_full = 0.9^3 = 0.729, w_pair = 0.1*0.9^2 = 0.081, w_single = 0.1^2*0.9 = 0.009
    num = 0.729 * m['full'] + 0.081 * (m['rd'] + m['re'] + m['de']) \
        + 0.009 * (m['r'] + m['d'] + m['e'])
    assert res['mm/EMM_E@0.1'] == approx(num / (0.729 + 3 * 0.081 + 3 * 0.009))
    assert res['mm/EMM_E@0.1'] == approx(91.38 / 0.999)
    assert 'mm/EMM_E@0.2' not in res
    # delta_m = full - mIoU(all but m)
    assert res['mm/delta/rgb'] == approx(M_A - M_C)    # all but rgb = depth+event
    assert res['mm/delta/depth'] == approx(M_A - M_B)  # all but depth = rgb+event
    assert res['mm/delta/event'] == approx(0)          # all but event = rgb+depth
    assert (res['mm/single/rgb'], res['mm/single/depth'], res['mm/single/event']) == (
        approx(M_B), approx(M_D), approx(M_E))
    # balance: min/max = 0 / 70.83; cv = population std / mean of (70.83, 25, 0)
    singles = np.array([M_B, M_D, M_E])
    mean = singles.sum() / 3  # 31.94
    std = math.sqrt(((singles - mean) ** 2).sum() / 3)
    assert res['mm/balance_min_max'] == 0
    assert res['mm/balance_cv'] == pytest.approx(std / mean, abs=1e-4)
    # entropy of q = (53.33, 29.17, 0) / 82.5 over ln 3 (0 ln 0 = 0)
    q1, q2 = (M_A - M_C) / (2 * M_A - M_B - M_C), (M_A - M_B) / (2 * M_A - M_B - M_C)
    assert res['mm/balance_entropy'] == pytest.approx(
        -(q1 * math.log(q1) + q2 * math.log(q2)) / math.log(3), abs=1e-4)


def test_balanced_contributions_give_one():
    # rgb and depth alone are equally good (B and B): min/max 1, cv 0, entropy 1
    passes = [[_sample(A)], [_sample(B, eval_subset='rgb')], [_sample(B, eval_subset='depth')]]
    res = _run(ModalityBalanceMetric(prefix='bal'), [passes],
               dict(classes=CLASSES, modalities=('rgb', 'depth')))
    assert res['bal/balance_min_max'] == 1
    assert res['bal/balance_cv'] == 0
    assert res['bal/balance_entropy'] == pytest.approx(1)


def test_plain_metric_mode_sums_histograms_and_groups():
    """No subset tags (stock TestLoop): everything is the full set; groups by condition/case."""
    gt2 = [[0, 0, 0], [0, 0, 255]]    # one ignored pixel
    pred2 = [[0, 0, 1], [0, 0, 1]]    # the 1 at the ignored pixel does not count
    batches = [[[_sample(B, condition='night', case='clean')]],
               [[_sample(pred2, gt2, condition='sun', case='motionblur')]]]
    res = _run(ModalityBalanceMetric(), batches, dict(classes=CLASSES))
    # summed areas: a: I = 3 + 4, pred = 4 + 4, gt = 3 + 5 -> U = 9;  b: I = 2, pred = 2 + 1,
    # gt = 3 -> U = 4;  mIoU = (7/9 + 2/4) / 2, aAcc = (7 + 2) / (3 + 3 + 5)
    assert res['mm/mIoU'] == pytest.approx((7 / 9 + 2 / 4) / 2 * 100, abs=0.006)
    assert res['mm/aAcc'] == pytest.approx(9 / 11 * 100, abs=0.006)
    # sample 2 alone: a: I=4, U=5; b: I=0, U=1 -> (0.8 + 0) / 2
    assert res['mm/condition/night/mIoU'] == pytest.approx(M_B, abs=0.006)
    assert res['mm/condition/sun/mIoU'] == pytest.approx(40.0, abs=0.006)
    assert res['mm/case/clean/mIoU'] == pytest.approx(M_B, abs=0.006)
    assert res['mm/case/motionblur/mIoU'] == pytest.approx(40.0, abs=0.006)
    assert set(res) == {'mm/mIoU', 'mm/aAcc', 'mm/condition/night/mIoU',
                        'mm/condition/sun/mIoU', 'mm/case/clean/mIoU',
                        'mm/case/motionblur/mIoU'}


def test_passes_fold_into_one_record_per_sample():
    metric = ModalityBalanceMetric()
    evaluator = Evaluator(metric)
    evaluator.dataset_meta = dict(classes=CLASSES, modalities=('rgb', 'depth'))
    for b in range(2):  # two batches of two samples, three passes each
        batch = dict()
        for subset in ('full', 'rgb', 'depth'):
            evaluator.process([_sample(A, eval_subset=subset, sample_idx=2 * b),
                               _sample(B, eval_subset=subset, sample_idx=2 * b + 1)], batch)
    assert len(metric.results) == 4  # collect_results cuts the list at the dataset size
    assert all(set(r['hists']) == {('EMM', 'full'), ('EMM', 'rgb'), ('EMM', 'depth')}
               for r in metric.results)
    res = evaluator.evaluate(4)
    # A and B twice each: a: I = 2*(3+3), U = 2*(3+4) -> 6/7;  b: I = 2*(3+2), U = 2*(3+3)
    assert res['mm/mIoU'] == pytest.approx((6 / 7 + 5 / 6) / 2 * 100, abs=0.006)
    assert res['mm/EMM_avg'] == pytest.approx((6 / 7 + 5 / 6) / 2 * 100, abs=0.006)


def _passes_of_dataset():
    """(sample, pass) -> prediction for 5 samples (by img_path, one also without sample_idx)
    under 2 modalities: EMM full/rgb/depth, RMM@0.25 and RMM@0.75 rgb/depth, NM@0.1 full."""
    preds = [A, B, C, D, E]
    passes = [('EMM', 'full'), ('EMM', 'rgb'), ('EMM', 'depth'), ('RMM@0.25', 'rgb'),
              ('RMM@0.25', 'depth'), ('RMM@0.75', 'rgb'), ('RMM@0.75', 'depth'),
              ('NM@0.1', 'full')]
    out = []
    for i in range(5):
        for j, (setting, subset) in enumerate(passes):
            meta = dict(img_path=f'img/{i}_rgb.png', condition=('night', 'sun')[i % 2],
                        eval_setting=setting, eval_subset=subset)
            if i != 3:
                meta['sample_idx'] = i
            out.append((i, j, preds[(i + j) % 5], meta))
    return out


def _feed(records, batch_sizes):
    """Evaluate ``records`` cut into consecutive process() calls of the given sizes (cycled),
    each with a new data_batch object; the records left in the metric and the figures."""
    metric = ModalityBalanceMetric(modalities=['rgb', 'depth'])
    evaluator = Evaluator(metric)
    evaluator.dataset_meta = dict(classes=CLASSES)
    pos, k = 0, 0
    while pos < len(records):
        n = batch_sizes[k % len(batch_sizes)]
        evaluator.process([_sample(p, **meta) for _, _, p, meta in records[pos:pos + n]],
                          dict(inputs=[], data_samples=[]))
        pos, k = pos + n, k + 1
    count = len(metric.results)
    return count, evaluator.evaluate(5)


def test_same_figures_whatever_order_and_batching():
    records = _passes_of_dataset()
    # the test loop's order: a batch of samples, every pass of it in turn
    loop_order = sorted(records, key=lambda r: (r[0] // 2, r[1], r[0]))
    count, ref = _feed(loop_order, [2, 2, 2, 2, 2, 2, 2, 2, 1])
    assert count == 5  # one record per sample
    assert ref['mm/mIoU/rgb'] > 0 and 'mm/RMM@0.75/EMM_avg' in ref and 'mm/NM@0.1/mIoU' in ref
    rng = np.random.RandomState(0)
    for trial in range(4):
        shuffled = [records[i] for i in rng.permutation(len(records))]
        count, res = _feed(shuffled, [[1], [3], [2, 5, 1], [7, 4]][trial])
        assert count == 5
        assert res == ref and list(res) == list(ref)  # same figures, same order of the keys
    # one sample per call, passes reversed
    count, res = _feed(records[::-1], [1])
    assert count == 5 and res == ref and list(res) == list(ref)
    assert [k for k in ref if k.endswith('/EMM_avg')] == [
        'mm/EMM_avg', 'mm/RMM@0.25/EMM_avg', 'mm/RMM@0.75/EMM_avg']


def test_repeated_sample_and_samples_without_identity():
    metric = ModalityBalanceMetric(modalities=['rgb', 'depth'])
    metric.dataset_meta = dict(classes=CLASSES)
    # a frame listed twice in a dataset: each pass comes twice, the frame counts twice
    for subset in ('full', 'rgb', 'full', 'rgb'):
        metric.process({}, [_sample(A, eval_subset=subset, sample_idx=0).to_dict()])
    assert len(metric.results) == 2
    assert all(set(r['hists']) == {('EMM', 'full'), ('EMM', 'rgb')} for r in metric.results)
    # without img_path and sample_idx: the clean full set only, one record per prediction
    metric.process({}, [_sample(B).to_dict(), _sample(B).to_dict()])
    assert len(metric.results) == 4
    with pytest.raises(ValueError, match=r"pass \('EMM', 'rgb'\) has neither.*sample_idx"):
        metric.process({}, [_sample(B, eval_subset='rgb').to_dict()])


def test_modality_subsets_enumeration():
    assert modality_subsets(['rgb', 'depth']) == [('rgb', 'depth'), ('rgb', ), ('depth', )]
    assert modality_subsets(['r', 'd', 'e']) == [
        ('r', 'd', 'e'), ('r', 'd'), ('r', 'e'), ('d', 'e'), ('r', ), ('d', ), ('e', )]
    four = modality_subsets(['r', 'd', 'e', 'l'])
    assert four == [('r', 'd', 'e', 'l'),
                    ('r', 'd', 'e'), ('r', 'd', 'l'), ('r', 'e', 'l'), ('d', 'e', 'l'),
                    ('r', 'd'), ('r', 'e'), ('r', 'l'), ('d', 'e'), ('d', 'l'), ('e', 'l'),
                    ('r', ), ('d', ), ('e', ), ('l', )]
    assert [len(modality_subsets(list('abcd')[:n])) for n in (2, 3, 4)] == [3, 7, 15]


def test_report_files(tmp_path):
    metric = ModalityBalanceMetric(modalities=['rgb', 'depth'], out_dir=str(tmp_path / 'rep'))
    passes = [[_sample(A, condition='night')], [_sample(B, eval_subset='rgb')],
              [_sample(C, eval_subset='depth')]]
    res = _run(metric, [passes], dict(classes=CLASSES))
    with open(tmp_path / 'rep' / 'robustness_report.json') as f:
        rep = json.load(f)
    assert set(rep) == {'modalities', 'classes', 'figures', 'settings', 'groups', 'definitions'}
    assert rep['modalities'] == ['rgb', 'depth']
    assert rep['figures']['EMM_avg'] == res['mm/EMM_avg']
    assert set(rep['settings']['EMM']) == {'full', 'rgb', 'depth'}
    iou = rep['settings']['EMM']['rgb']['IoU']
    assert iou == {'a': 75.0, 'b': pytest.approx(66.67), 'c': None}  # c: no GT, no prediction
    assert rep['groups']['condition']['night']['mIoU'] == 100.0
    md = (tmp_path / 'rep' / 'robustness_report.md').read_text()
    assert '| subset | modalities | EMM |' in md
    assert '| rgb | 1 | 70.83 |' in md
    assert '| EMM_avg | 72.50 |' in md
    assert '| night |' in md
    png = (tmp_path / 'rep' / 'robustness_report.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'

    # report=False: no files, even with out_dir
    metric = ModalityBalanceMetric(out_dir=str(tmp_path / 'none'), report=False)
    _run(metric, [[[_sample(A)]]], dict(classes=CLASSES))
    assert not (tmp_path / 'none').exists()
    # plain mode (full set only) writes a report too
    metric = ModalityBalanceMetric(out_dir=str(tmp_path / 'plain'))
    _run(metric, [[[_sample(B)]]], dict(classes=CLASSES))
    assert (tmp_path / 'plain' / 'robustness_report.png').read_bytes()[:4] == b'\x89PNG'


def test_registered_and_built_from_config():
    metric = METRICS.build(dict(type='ModalityBalanceMetric', expectation_ps=[0.5]))
    assert isinstance(metric, ModalityBalanceMetric) and metric.expectation_ps == (0.5, )


@pytest.mark.parametrize('kwargs, error, text', [
    (dict(expectation_ps=(0.0, )), ValueError, 'expectation_ps'),
    (dict(expectation_ps=(1.5, )), ValueError, 'expectation_ps'),
    (dict(modalities='rgb'), TypeError, 'modalities'),
    (dict(modalities=['rgb', 'rgb']), ValueError, 'modalities'),
    (dict(modalities=[]), ValueError, 'modalities'),
    (dict(group_keys='condition'), TypeError, 'group_keys'),
    (dict(report='yes'), TypeError, 'report'),
    (dict(ignore_index=2.5), TypeError, 'ignore_index'),
])
def test_bad_args(kwargs, error, text):
    with pytest.raises(error, match=text):
        ModalityBalanceMetric(**kwargs)


def test_bad_subset_tag_and_missing_meta():
    metric = ModalityBalanceMetric()
    metric.dataset_meta = dict(classes=CLASSES, modalities=('rgb', 'depth'))
    with pytest.raises(ValueError, match=r"unknown.*\['lidar'\].*allowed values are \['rgb', "
                                         r"'depth'\]"):
        metric.process({}, [_sample(A, eval_subset='rgb+lidar').to_dict()])
    metric = ModalityBalanceMetric()
    with pytest.raises(ValueError, match='classes'):
        metric.process({}, [_sample(A).to_dict()])

import glob
import importlib.util
import json
import os
import re
import os.path as osp
import subprocess
import sys

import equiseg_mm  # noqa: F401  (compat fixes first)
import cv2
import numpy as np
import pytest

from _synthetic_deliver import make_synthetic_deliver
from equiseg_mm.datasets import DELIVERDataset
import _synthetic_deliver as synthetic_deliver
from _synthetic_deliver import (COMPLEMENTARY_PAIRS, DELIVER_CLASSES,
                                                   DELIVER_PALETTE, STREET_PAIRS,
                                                   SYNTHETIC_CLASS_IDS)

SIZE = (48, 64)
SMALL = dict(num_train=3, num_val=6, num_test=0, size=SIZE, frames_per_sequence=1,
             conditions=('sun', 'night', 'fog'))
FOLDERS = dict(rgb=('img', 'rgb'), depth=('hha', 'depth'), event=('event', 'event'),
               lidar=('lidar', 'lidar'), label=('semantic', 'semantic'))
ID = {name: i for i, name in enumerate(DELIVER_CLASSES)}


def files(root):
    return sorted(osp.relpath(p, root) for p in glob.glob(osp.join(root, '**', '*'),
                                                          recursive=True) if osp.isfile(p))


def read(root, rgb_rel, modality):
    folder, token = FOLDERS[modality]
    rel = rgb_rel.replace('img/', f'{folder}/', 1).replace('_rgb_front', f'_{token}_front')
    return cv2.imread(osp.join(root, rel), cv2.IMREAD_UNCHANGED)


def rgb_files(root, pattern='*/*/*'):
    return sorted(osp.relpath(p, root) for p in glob.glob(osp.join(root, 'img', pattern, '*')))


@pytest.fixture(scope='module')
def small(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic') / 'DELIVER')
    return root, make_synthetic_deliver(root, seed=0, **SMALL)


def test_deterministic_per_seed(small, tmp_path):
    root, _ = small
    again = str(tmp_path / 'again')
    other = str(tmp_path / 'other')
    make_synthetic_deliver(again, seed=0, **SMALL)
    make_synthetic_deliver(other, seed=1, **SMALL)
    assert files(root) == files(again) == files(other)
    for rel in files(root):
        with open(osp.join(root, rel), 'rb') as a, open(osp.join(again, rel), 'rb') as b:
            assert a.read() == b.read(), rel
    differ = 0
    for rel in files(root):
        with open(osp.join(root, rel), 'rb') as a, open(osp.join(other, rel), 'rb') as b:
            differ += a.read() != b.read()
    assert differ > len(files(root)) // 2


def test_layout_counts_and_summary(small):
    root, summary = small
    rgb = rgb_files(root)
    assert len(rgb) == 9
    assert summary['num_samples'] == dict(train=3, val=6, test=0)
    assert summary['cases']['train'] == dict(clean=3)
    assert summary['cases']['val'] == dict(motionblur=1, overexposure=1, underexposure=1,
                                           lidarjitter=1, eventlowres=1, clean=1)
    assert summary['conditions']['val'] == dict(sun=2, night=2, fog=2)
    for rel in rgb:
        folder, condition, split, sequence, name = rel.split('/')
        assert folder == 'img' and condition in ('sun', 'night', 'fog')
        assert name.endswith('_rgb_front.png') and len(name.split('_')[0]) == 6
        if split == 'train':
            assert sequence.startswith('seq') and '_' not in sequence
        for modality in ('depth', 'event', 'lidar', 'label'):
            arr = read(root, rel, modality)
            assert arr is not None and arr.dtype == np.uint8 and arr.ndim == 3, (rel, modality)
    assert osp.isfile(osp.join(root, 'img/sun/val/seq00_motionblur/000003_rgb_front.png'))
    assert osp.isfile(osp.join(root, 'hha/sun/val/seq00_motionblur/000003_depth_front.png'))
    assert osp.isfile(osp.join(root, 'semantic/night/val/seq04_eventlowres/'
                                     '000007_semantic_front.png'))
    meta = json.load(open(osp.join(root, 'synthetic_meta.json')))
    assert meta['seed'] == 0 and meta['size'] == list(SIZE)
    assert [c['name'] for c in meta['classes']] == summary['classes']
    assert {p['separated_by'] for p in meta['pairs']} == {'rgb', 'depth', 'event', 'lidar'}


def test_labels_use_deliver_ids_in_the_r_channel(small):
    root, _ = small
    allowed = {i + 1 for i in SYNTHETIC_CLASS_IDS}
    seen = set()
    for rel in rgb_files(root):
        label = read(root, rel, 'label')               # cv2: B, G, R
        assert label.shape == (*SIZE, 3)
        assert not label[..., :2].any()                # G and B are 0
        values = set(np.unique(label[..., 2]).tolist())
        assert values <= allowed
        seen |= values
    assert len(seen) >= 7


def test_deliver_dataset_reads_it_unchanged(small):
    root, _ = small
    pipeline = [dict(type='LoadMultiModalImageFromFiles'),
                dict(type='LoadMultiModalAnnotations')]
    ds = DELIVERDataset(data_root=root, split='val', pipeline=pipeline)
    assert len(ds) == 6
    assert sorted(ds.get_data_info(i)['case'] for i in range(len(ds))) == sorted(
        ['motionblur', 'overexposure', 'underexposure', 'lidarjitter', 'eventlowres', 'clean'])
    for i in range(len(ds)):
        out = ds[i]
        assert out['img'].shape == (*SIZE, 12)          # the low-res event frame is resized
        assert set(np.unique(out['gt_seg_map']).tolist()) <= set(SYNTHETIC_CLASS_IDS)


def test_conditions_and_failure_cases(small):
    root, _ = small
    mean = {}
    for rel in rgb_files(root, '*/train/*'):
        mean[rel.split('/')[1]] = read(root, rel, 'rgb').astype(float).mean()
    assert mean['night'] < 0.3 * mean['sun']
    fog = rgb_files(root, 'fog/train/*')[0]
    sun = rgb_files(root, 'sun/train/*')[0]
    assert read(root, fog, 'rgb').std() < 0.6 * read(root, sun, 'rgb').std()
    sky = read(root, fog, 'label')[..., 2] == ID['Sky'] + 1
    assert read(root, fog, 'lidar')[sky].any()         # spurious returns in fog
    sky = read(root, sun, 'label')[..., 2] == ID['Sky'] + 1
    assert not read(root, sun, 'lidar')[sky].any()     # a clear sky gives no returns

    (lowres, ) = rgb_files(root, '*/val/*eventlowres')
    event = read(root, lowres, 'event')
    assert event.shape == (SIZE[0] // 6, SIZE[1] // 6, 3)    # severity 4: factor 6
    for rel in rgb_files(root, '*/*/*'):
        if 'eventlowres' not in rel:
            assert read(root, rel, 'event').shape[:2] == SIZE
    (over, ) = rgb_files(root, '*/val/*overexposure')
    assert (read(root, over, 'rgb') == 255).any(-1).mean() > 0.6   # even at night


def test_modalities_are_complementary(tmp_path):
    """For each pair, only its modality differs between the two classes' pixel statistics."""
    root = str(tmp_path / 'pairs')
    make_synthetic_deliver(root, num_train=40, num_val=0, num_test=0, size=SIZE, seed=0,
                           conditions=('sun', ))
    pixels = {}
    for rel in rgb_files(root):
        label = read(root, rel, 'label')[..., 2].astype(int) - 1
        for modality in ('rgb', 'depth', 'event', 'lidar'):
            arr = read(root, rel, modality).astype(float)
            for cls in np.unique(label):
                pixels.setdefault((cls, modality), []).append(arr[label == cls])
    for a, b, separating, _ in COMPLEMENTARY_PAIRS:
        for modality in ('rgb', 'depth', 'event', 'lidar'):
            xa = np.concatenate(pixels[(ID[a], modality)])
            xb = np.concatenate(pixels[(ID[b], modality)])
            diff = np.abs(xa.mean(0) - xb.mean(0)).max()
            if modality == separating:
                assert diff > 50, (a, b, modality, diff)
            else:
                assert diff < 15, (a, b, modality, diff)


def _pair_differences(root):
    """{(class A, class B, modality): largest channel difference of the two classes' means}."""
    pixels = {}
    for rel in rgb_files(root):
        label = read(root, rel, 'label')[..., 2].astype(int) - 1
        for modality in ('rgb', 'depth', 'event', 'lidar'):
            arr = read(root, rel, modality).astype(float)
            for cls in np.unique(label):
                pixels.setdefault((cls, modality), []).append(arr[label == cls])
    out = {}
    for a, b, _, _ in STREET_PAIRS:
        for modality in ('rgb', 'depth', 'event', 'lidar'):
            xa = np.concatenate(pixels[(ID[a], modality)])
            xb = np.concatenate(pixels[(ID[b], modality)])
            out[(a, b, modality)] = np.abs(xa.mean(0) - xb.mean(0)).max()
    return out


def test_street_scene_rgb_separates_every_pair_by_day_and_others_repeat_one_cue(tmp_path):
    """The street scene: by day RGB tells every pair apart; depth, lidar and events each tell
    their one pair apart (and nothing else); at night RGB's differences all but vanish."""
    day = str(tmp_path / 'day')
    summary = make_synthetic_deliver(day, num_train=40, num_val=0, num_test=0, size=SIZE,
                                     seed=0, conditions=('sun', ), scene='street')
    assert summary['scene'] == 'street'
    assert [p[2] for p in summary['pairs']] == ['rgb', 'rgb+depth', 'rgb+lidar', 'rgb+event']
    meta = json.load(open(osp.join(day, 'synthetic_meta.json')))
    assert meta['scene'] == 'street'
    diff = _pair_differences(day)
    for a, b, separating, _ in STREET_PAIRS:
        for modality in ('rgb', 'depth', 'event', 'lidar'):
            if modality in separating.split('+'):
                assert diff[(a, b, modality)] > 25, (a, b, modality, diff[(a, b, modality)])
            else:
                assert diff[(a, b, modality)] < 15, (a, b, modality, diff[(a, b, modality)])
    night = str(tmp_path / 'night')
    make_synthetic_deliver(night, num_train=40, num_val=0, num_test=0, size=SIZE, seed=0,
                           conditions=('night', ), scene='street')
    diff_night = _pair_differences(night)
    for a, b, separating, _ in STREET_PAIRS:
        assert diff_night[(a, b, 'rgb')] < 0.1 * diff[(a, b, 'rgb')], (a, b)
        for modality in separating.split('+')[1:]:   # the other sensor keeps its cue at night
            assert diff_night[(a, b, modality)] > 25, (a, b, modality)


def test_street_scene_defaults_and_the_complementary_meta_file(tmp_path):
    """Half the street frames are at night or in fog; the complementary scene's meta file has
    no scene key (existing datasets keep matching), the street scene's has one."""
    summary = make_synthetic_deliver(str(tmp_path / 's'), num_train=8, num_val=0, num_test=0,
                                     size=(16, 16), frames_per_sequence=1, scene='street')
    assert summary['conditions']['train'] == dict(sun=4, night=2, fog=2)
    make_synthetic_deliver(str(tmp_path / 'c'), num_train=1, num_val=0, num_test=0,
                           size=(16, 16))
    assert 'scene' not in json.load(open(str(tmp_path / 'c' / 'synthetic_meta.json')))
    with pytest.raises(FileExistsError, match='other settings'):   # another scene: refused
        make_synthetic_deliver(str(tmp_path / 'c'), num_train=1, num_val=0, num_test=0,
                               size=(16, 16), scene='street')


def test_refuses_to_overwrite_something_else(tmp_path):
    root = tmp_path / 'data'
    root.mkdir()
    (root / 'mine.txt').write_text('not a dataset')
    kwargs = dict(num_train=1, num_val=0, num_test=0, size=(16, 16))
    with pytest.raises(FileExistsError, match='overwrite=True'):
        make_synthetic_deliver(str(root), **kwargs)
    make_synthetic_deliver(str(root), overwrite=True, **kwargs)
    first = files(str(root))
    make_synthetic_deliver(str(root), **kwargs)        # the same dataset: fine
    assert files(str(root)) == first
    with pytest.raises(FileExistsError, match='other settings'):
        make_synthetic_deliver(str(root), seed=3, **kwargs)
    make_synthetic_deliver(str(root), seed=3, overwrite=True, num_train=2, num_val=0,
                           num_test=0, size=(16, 16))
    assert len(rgb_files(str(root))) == 2 and (root / 'mine.txt').exists()


@pytest.mark.parametrize('kwargs, match', [
    (dict(conditions=('snow', )), r"'snow'.*'cloud', 'fog', 'night', 'rain', 'sun'"),
    (dict(conditions='sun'), r"conditions must be a sequence of names.*\('sun', \)"),
    (dict(conditions=()), 'conditions must not be empty'),
    (dict(cases=('blur', )), r"'blur'.*'motionblur'"),
    (dict(num_train=-1), 'num_train'),
    (dict(num_val=2.0), 'num_val'),
    (dict(num_test=True), 'num_test'),
    (dict(size=(8, 64)), 'size'),
    (dict(size=(16.5, 64)), 'size'),
    (dict(size=64), 'size'),
    (dict(seed=-1), 'seed'),
    (dict(seed=1.5), 'seed'),
    (dict(failure_severity=9), 'failure_severity'),
    (dict(failure_severity=4.0), 'failure_severity'),
    (dict(failure_severity=True), 'failure_severity'),
    (dict(frames_per_sequence=0), 'frames_per_sequence'),
    (dict(frames_per_sequence=2.0), 'frames_per_sequence'),
    (dict(overwrite='yes'), 'overwrite'),
    (dict(scene='city'), r"unknown scene 'city'.*'complementary', 'street'"),
    (dict(scene=['street']), 'unknown scene'),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_deliver(str(tmp_path / 'x'), **dict(
            dict(num_train=1, num_val=1, num_test=0, size=(16, 16)), **kwargs))
    assert os.listdir(tmp_path) == []  # checked before anything is written


def test_numpy_ints_are_accepted(tmp_path):
    summary = make_synthetic_deliver(str(tmp_path / 'np'), num_train=np.int64(1), num_val=0,
                                     num_test=0, size=(np.int32(16), 16), seed=np.uint8(2),
                                     failure_severity=np.int64(2),
                                     frames_per_sequence=np.int16(1))
    meta = json.load(open(summary['meta_path']))
    assert meta['seed'] == 2 and meta['size'] == [16, 16] and meta['failure_severity'] == 2


TINY = dict(num_train=2, num_val=6, num_test=0, size=(16, 16), frames_per_sequence=1)


def _interrupt_after(monkeypatch, calls):
    """Make the generator's file writer raise KeyboardInterrupt at its ``calls``-th call."""
    real, count = synthetic_deliver._write, [0]

    def write(path, array):
        count[0] += 1
        if count[0] >= calls:
            raise KeyboardInterrupt('killed')
        real(path, array)

    monkeypatch.setattr(synthetic_deliver, '_write', write)


def test_an_interrupted_run_leaves_nothing_that_blocks(tmp_path, monkeypatch):
    root = tmp_path / 'DELIVER'
    with monkeypatch.context() as m:
        _interrupt_after(m, 12)
        with pytest.raises(KeyboardInterrupt):
            make_synthetic_deliver(str(root), **TINY)
    assert os.listdir(tmp_path) == []  # not even the partial folder
    make_synthetic_deliver(str(root), **TINY)
    reference = str(tmp_path / 'reference')
    make_synthetic_deliver(reference, **TINY)
    assert files(str(root)) == files(reference)
    for rel in files(reference):
        with open(osp.join(root, rel), 'rb') as a, open(osp.join(reference, rel), 'rb') as b:
            assert a.read() == b.read(), rel


def test_the_partial_folder_of_a_killed_run_is_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()  # a finished process: its partial folder is stale
    stale = tmp_path / f'.DELIVER.partial-{dead.pid}-abc'
    (stale / 'img').mkdir(parents=True)
    running = tmp_path / f'.DELIVER.partial-{os.getpid()}-xyz'  # a live run: kept
    running.mkdir()
    other = tmp_path / '.OTHER.partial-1-abc'  # another dataset's: kept
    other.mkdir()
    make_synthetic_deliver(str(tmp_path / 'DELIVER'), **TINY)
    assert sorted(os.listdir(tmp_path)) == sorted(['DELIVER', running.name, other.name])


def test_a_complete_dataset_is_returned_without_rewriting(tmp_path, monkeypatch):
    root = str(tmp_path / 'DELIVER')
    first = make_synthetic_deliver(root, **TINY)
    stamps = {rel: os.stat(osp.join(root, rel)).st_mtime_ns for rel in files(root)}
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)  # any write would raise
        again = make_synthetic_deliver(root, **TINY)
    assert again == first
    assert {rel: os.stat(osp.join(root, rel)).st_mtime_ns for rel in files(root)} == stamps
    # an incomplete copy of the same dataset is completed without overwrite=True
    victim = rgb_files(root)[3]
    os.remove(osp.join(root, victim))
    make_synthetic_deliver(root, **TINY)
    assert victim in files(root)


def test_an_interrupted_overwrite_keeps_the_old_dataset(tmp_path, monkeypatch):
    root = tmp_path / 'data'
    root.mkdir()
    (root / 'mine.txt').write_text('not a dataset')
    make_synthetic_deliver(str(root), overwrite=True, **TINY)
    before = {rel: (root / rel).read_bytes() for rel in files(str(root))}
    with monkeypatch.context() as m:
        _interrupt_after(m, 5)
        with pytest.raises(KeyboardInterrupt):
            make_synthetic_deliver(str(root), seed=4, overwrite=True, **TINY)
    assert {rel: (root / rel).read_bytes() for rel in files(str(root))} == before
    assert sorted(os.listdir(tmp_path)) == ['data']
    make_synthetic_deliver(str(root), **TINY)  # still the complete first dataset: no error


def test_deliver_constants_come_from_the_dataset():
    assert DELIVER_CLASSES == DELIVERDataset.METAINFO['classes']
    assert [list(c) for c in DELIVER_PALETTE] == DELIVERDataset.METAINFO['palette']
    assert synthetic_deliver.CONDITIONS is DELIVERDataset.CONDITIONS
    assert synthetic_deliver.SPLITS is DELIVERDataset.SPLITS


def test_cli(tmp_path, capsys):
    path = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'make_synthetic_dataset.py')
    spec = importlib.util.spec_from_file_location('make_synthetic_dataset', path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = str(tmp_path / 'cli')
    summary = cli.main(['--out', out, '--seed', '2', '--num-train', '2', '--num-val', '5',
                        '--num-test', '1', '--size', '32', '48'])
    text = capsys.readouterr().out
    assert summary['size'] == (32, 48) and len(rgb_files(out)) == 8
    assert re.search(r'train +2 samples', text) and re.search(r'val +5 samples', text)
    assert 'eventlowres 1' in text and 'Building / Wall: told apart by depth only' in text
    with pytest.raises(FileExistsError):
        cli.main(['--out', out, '--seed', '3', '--num-train', '1', '--num-val', '0',
                  '--num-test', '0'])

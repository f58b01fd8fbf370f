"""MultiModalSegDataset on an own RGB-thermal(-depth) folder-per-modality layout."""
import os
import os.path as osp

import numpy as np
import pytest
from multimodal_fixtures import MODALITY_IDS, position_image, position_labels, write_image

from equiseg_mm.datasets import MultiModalSegDataset
from mmseg.registry import DATASETS

CLASSES = ('a', 'b', 'c', 'd', 'e')
META = dict(classes=CLASSES, palette=[[i, i, i] for i in range(5)])
SIZE = (12, 20)
NAMES = ['seq1/0001', 'seq1/0002', 'seq2/0001']


def make_own_layout(root, names=NAMES):
    """rgb/<name>.png, thermal/<name>_thermal.png (1 channel), depth/<name>_d.png, labels/."""
    h, w = SIZE
    for name in names:
        write_image(osp.join(root, 'rgb', name + '.png'), position_image(h, w, 10))
        write_image(osp.join(root, 'thermal', name + '_thermal.png'),
                    np.full((h, w), MODALITY_IDS['thermal'], np.uint8))
        write_image(osp.join(root, 'depth', name + '_d.png'), position_image(h, w, 20))
        write_image(osp.join(root, 'labels', name + '.png'), position_labels(h, w, 5))
    return str(root)


def build(root, **kwargs):
    cfg = dict(
        type='MultiModalSegDataset',
        data_root=root,
        modalities=['rgb', 'thermal'],
        modality_dirs=dict(rgb='rgb', thermal='thermal', depth='depth'),
        modality_suffixes=dict(rgb='.png', thermal='_thermal.png', depth='_d.png'),
        data_prefix=dict(seg_map_path='labels'),
        metainfo=META)
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def test_reads_own_layout(tmp_path):
    root = make_own_layout(tmp_path)
    ds = build(root)
    assert isinstance(ds, MultiModalSegDataset) and len(ds) == 3
    assert ds.metainfo['modalities'] == ('rgb', 'thermal')
    assert ds.metainfo['classes'] == CLASSES
    infos = ds.load_data_list()
    assert [i['sample_name'] for i in infos] == NAMES
    info = ds.get_data_info(2)
    assert list(info['modality_paths']) == ['rgb', 'thermal']
    assert info['modality_paths']['thermal'] == osp.join(root, 'thermal', 'seq2/0001_thermal.png')
    assert info['img_path'] == osp.join(root, 'rgb', 'seq2/0001.png')
    assert info['seg_map_path'] == osp.join(root, 'labels', 'seq2/0001.png')
    assert info['num_classes'] == 5 and info['reduce_zero_label'] is False
    assert info['label_map'] is None and info['seg_fields'] == [] and info['sample_idx'] == 2


def test_modality_order_is_stacking_order(tmp_path):
    root = make_own_layout(tmp_path)
    ds = build(root, modalities=['rgb', 'depth', 'thermal'],
               pipeline=[dict(type='LoadMultiModalImageFromFiles', channels=dict(thermal=1))])
    assert list(ds.get_data_info(0)['modality_paths']) == ['rgb', 'depth', 'thermal']
    out = ds[0]
    assert out['img'].shape == (*SIZE, 7)
    assert out['modality_channels'] == [3, 3, 1]
    assert out['img'][0, 0, 2] == 10 and out['img'][0, 0, 5] == 20
    assert out['img'][0, 0, 6] == MODALITY_IDS['thermal']


def test_ann_file_lists_samples(tmp_path):
    root = make_own_layout(tmp_path)
    (tmp_path / 'split.txt').write_text('seq2/0001\n\nseq1/0002\n')
    ds = build(root, ann_file='split.txt')
    assert [i['sample_name'] for i in ds.load_data_list()] == ['seq2/0001', 'seq1/0002']


def test_unlabelled_data(tmp_path):
    root = make_own_layout(tmp_path)
    ds = build(root, data_prefix=dict())
    assert 'seg_map_path' not in ds.get_data_info(0)


def test_pipeline_to_pack_seg_inputs(tmp_path):
    root = make_own_layout(tmp_path)
    ds = build(root, pipeline=[
        dict(type='LoadMultiModalImageFromFiles', channels=dict(thermal=1)),
        dict(type='LoadMultiModalAnnotations'),
        dict(type='PackSegInputs'),
    ])
    out = ds[1]
    assert tuple(out['inputs'].shape) == (4, *SIZE)
    np.testing.assert_array_equal(out['data_samples'].gt_sem_seg.data[0].numpy(),
                                  position_labels(*SIZE, 5))


def test_unknown_modality(tmp_path):
    root = make_own_layout(tmp_path)
    with pytest.raises(ValueError, match=r"\['lidar'\].*\['rgb', 'thermal', 'depth'\]"):
        build(root, modalities=['rgb', 'lidar'])


@pytest.mark.parametrize('modalities', [[], 'rgb', ['rgb', 'rgb']])
def test_bad_modality_lists(tmp_path, modalities):
    root = make_own_layout(tmp_path)
    with pytest.raises(ValueError, match='modalit'):
        build(root, modalities=modalities)


def test_needs_classes(tmp_path):
    root = make_own_layout(tmp_path)
    with pytest.raises(ValueError, match='classes'):
        build(root, metainfo=None)


def test_img_path_prefix_must_match_primary_folder(tmp_path):
    root = make_own_layout(tmp_path)
    with pytest.raises(ValueError, match=r"img_path.*modality_dirs\['rgb'\]"):
        build(root, data_prefix=dict(img_path='images', seg_map_path='labels'))
    assert len(build(root, data_prefix=dict(img_path='rgb', seg_map_path='labels'))) == 3


def test_empty_folder(tmp_path):
    root = make_own_layout(tmp_path)
    with pytest.raises(ValueError, match=r"no sample in folder .*rgb.*'\.jpg'"):
        build(root, modality_suffixes=dict(rgb='.jpg', thermal='_thermal.png'))


def test_missing_files_named_at_construction(tmp_path):
    root = make_own_layout(tmp_path)
    thermal = osp.join(root, 'thermal', 'seq1/0002_thermal.png')
    label = osp.join(root, 'labels', 'seq2/0001.png')
    os.remove(thermal)
    os.remove(label)
    with pytest.raises(FileNotFoundError) as err:
        build(root)
    msg = str(err.value)
    assert "'seq1/0002'" in msg and thermal in msg
    assert "'seq2/0001'" in msg and label in msg and '2 missing' in msg


def test_missing_file_deferred_to_loading(tmp_path):
    root = make_own_layout(tmp_path)
    thermal = osp.join(root, 'thermal', 'seq1/0002_thermal.png')
    os.remove(thermal)
    ds = build(root, check_files=False, pipeline=[dict(type='LoadMultiModalImageFromFiles')])
    assert len(ds) == 3
    with pytest.raises(FileNotFoundError, match='sample 1 .seq1/0002') as err:
        ds[1]
    assert thermal in str(err.value)

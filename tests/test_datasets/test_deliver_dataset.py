"""DELIVERDataset on a tiny tree in the real DeLiVER layout."""
import os
import os.path as osp

import numpy as np
import pytest
from multimodal_fixtures import (DELIVER_SAMPLES, MODALITY_IDS, H, W, deliver_label_png,
                                 make_deliver, position_labels, write_image)
from mmengine.registry import init_default_scope

from equiseg_mm.datasets import DELIVERDataset
from equiseg_mm.datasets.transforms import LoadMultiModalAnnotations, LoadMultiModalImageFromFiles
from mmseg.registry import DATASETS

LOAD = [dict(type='LoadMultiModalImageFromFiles'), dict(type='LoadMultiModalAnnotations')]


def _names(ds):
    return [info['sample_name'] for info in ds.load_data_list()]


def _expected(split, keep=lambda s: True):
    return sorted(f'{c}/{sp}/{rel}' for c, sp, rel, case in DELIVER_SAMPLES
                  if sp == split and keep((c, sp, rel, case)))


def test_train_split_data_infos(deliver_root):
    ds = DELIVERDataset(data_root=deliver_root, split='train')
    assert len(ds) == 3
    assert _names(ds) == _expected('train')
    info = ds.get_data_info(0)  # cloud/train/MAP_1/000001
    base = 'cloud/train/MAP_1/000001'
    assert list(info['modality_paths']) == ['rgb', 'depth', 'event', 'lidar']
    assert info['modality_paths'] == {
        'rgb': osp.join(deliver_root, 'img', base + '_rgb_front.png'),
        'depth': osp.join(deliver_root, 'hha', base + '_depth_front.png'),
        'event': osp.join(deliver_root, 'event', base + '_event_front.png'),
        'lidar': osp.join(deliver_root, 'lidar', base + '_lidar_front.png'),
    }
    assert info['img_path'] == info['modality_paths']['rgb']
    assert info['seg_map_path'] == osp.join(deliver_root, 'semantic', base + '_semantic_front.png')
    assert (info['condition'], info['case'], info['num_classes']) == ('cloud', 'clean', 25)
    assert info['reduce_zero_label'] is True and info['sample_idx'] == 0
    assert ds.metainfo['modalities'] == ('rgb', 'depth', 'event', 'lidar')
    assert len(ds.metainfo['classes']) == 25 and len(ds.metainfo['palette']) == 25
    assert ds.metainfo['classes'][0] == 'Building' and ds.metainfo['classes'][-1] == 'Truck'
    assert ds.metainfo['palette'][0] == [70, 70, 70]
    assert ds.metainfo['palette'][-1] == [0, 0, 70]
    by_name = {i['sample_name']: i for i in ds.load_data_list()}
    assert by_name['night/train/MAP_2_motionblur/000002']['case'] == 'motionblur'
    assert by_name['night/train/MAP_2_motionblur/000002']['condition'] == 'night'


@pytest.mark.parametrize('split', ['val', 'test'])
def test_split_filter(deliver_root, split):
    ds = DELIVERDataset(data_root=deliver_root, split=split)
    assert _names(ds) == _expected(split)


def test_condition_filter(deliver_root):
    ds = DELIVERDataset(data_root=deliver_root, split='train', conditions=['night', 'fog'])
    assert _names(ds) == _expected('train', lambda s: s[0] in ('night', 'fog'))
    assert {i['condition'] for i in ds.load_data_list()} == {'night', 'fog'}


def test_case_filter_including_clean(deliver_root):
    clean = DELIVERDataset(data_root=deliver_root, split='train', cases=['clean'])
    assert _names(clean) == ['cloud/train/MAP_1/000001', 'fog/train/MAP_3/000003']
    blur = DELIVERDataset(data_root=deliver_root, split='train', cases=['motionblur', 'clean'])
    assert len(blur) == 3
    jitter = DELIVERDataset(data_root=deliver_root, split='val', cases=['lidarjitter'])
    assert [i['case'] for i in jitter.load_data_list()] == ['lidarjitter']
    # the case may be a folder below the split folder, not only part of the sequence name
    low = DELIVERDataset(data_root=deliver_root, split='test', cases=['eventlowres'])
    assert _names(low) == ['sun/test/eventlowres/MAP_6/000006']


def test_configurable_depth_folder(deliver_root):
    hha = DELIVERDataset(data_root=deliver_root, split='val', modalities=['rgb', 'depth'],
                         pipeline=LOAD)
    depth = DELIVERDataset(data_root=deliver_root, split='val', modalities=['rgb', 'depth'],
                           modality_dirs=dict(depth='depth'), pipeline=LOAD)
    assert depth.get_data_info(0)['modality_paths']['depth'].startswith(
        osp.join(deliver_root, 'depth') + os.sep)
    assert hha[0]['img'][0, 0, 5] == MODALITY_IDS['hha']
    assert depth[0]['img'][0, 0, 5] == MODALITY_IDS['depth']
    assert depth[0]['modalities'] == ['rgb', 'depth']


def test_label_mapping_pixel_by_pixel(tmp_path):
    root = make_deliver(tmp_path, samples=[('cloud', 'train', 'MAP_1/000001', 'clean')])
    raw = np.zeros((H, W), np.uint8)
    raw[:, 10:20] = 1
    raw[:, 20:30] = 25
    raw[:, 30:] = 255
    raw[0, 0] = 13
    write_image(osp.join(root, 'semantic/cloud/train/MAP_1/000001_semantic_front.png'),
                deliver_label_png(raw))
    ds = DELIVERDataset(data_root=root, split='train', pipeline=LOAD)
    gt = ds[0]['gt_seg_map']
    expected = np.full((H, W), 255, np.uint8)  # raw 0 and raw 255 -> ignore
    expected[:, 10:20] = 0  # raw 1 -> class 0
    expected[:, 20:30] = 24  # raw 25 -> class 24
    expected[0, 0] = 12
    assert gt.shape == (H, W) and gt.dtype == np.uint8
    np.testing.assert_array_equal(gt, expected)


def test_custom_class_subset_uses_label_map(tmp_path):
    root = make_deliver(tmp_path, samples=[('cloud', 'train', 'MAP_1/000001', 'clean')])
    ds = DELIVERDataset(data_root=root, split='train', pipeline=LOAD,
                        metainfo=dict(classes=('Building', 'Road')))
    assert ds.get_data_info(0)['num_classes'] == 2
    assert ds.metainfo['palette'] == [[70, 70, 70], [128, 64, 128]]
    gt = ds[0]['gt_seg_map']
    expected = np.full((H, W), 255, np.uint8)
    classes = position_labels(H, W)
    expected[classes == 0] = 0  # Building
    expected[classes == 6] = 1  # Road
    np.testing.assert_array_equal(gt, expected)


def test_out_of_range_label_value(tmp_path):
    root = make_deliver(tmp_path, samples=[('fog', 'val', 'MAP_1/000001', 'clean')])
    raw = np.ones((H, W), np.uint8)
    raw[3, 4] = 30  # -> 29 after reduce_zero_label: not a DeLiVER class
    label = osp.join(root, 'semantic/fog/val/MAP_1/000001_semantic_front.png')
    write_image(label, deliver_label_png(raw))
    ds = DELIVERDataset(data_root=root, split='val', pipeline=LOAD)
    with pytest.raises(ValueError, match=r'holds values \[29\].*0\.\.24') as err:
        ds[0]
    assert label in str(err.value)


def test_registry_build_and_full_pipeline(deliver_root):
    init_default_scope('mmseg')
    crop = (14, 30)
    ds = DATASETS.build(dict(
        type='DELIVERDataset', data_root=deliver_root, split='train',
        pipeline=LOAD + [
            dict(type='RandomResize', scale=(80, 48), ratio_range=(0.5, 1.0), keep_ratio=True),
            dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackSegInputs',
                 meta_keys=('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape',
                            'scale_factor', 'flip', 'flip_direction', 'reduce_zero_label',
                            'modalities', 'condition', 'case')),
        ]))
    assert isinstance(ds, DELIVERDataset) and len(ds) == 3
    out = ds[2]  # sorted: cloud, fog, night
    inputs, sample = out['inputs'], out['data_samples']
    assert tuple(inputs.shape) == (12, *crop)
    assert tuple(sample.gt_sem_seg.data.shape) == (1, *crop)
    assert sample.metainfo['modalities'] == ['rgb', 'depth', 'event', 'lidar']
    assert sample.metainfo['condition'] == 'night' and sample.metainfo['case'] == 'motionblur'
    assert sample.metainfo['ori_shape'] == (H, W)


def test_loading_transforms_are_the_package_ones(deliver_root):
    ds = DELIVERDataset(data_root=deliver_root, split='val', pipeline=LOAD)
    assert isinstance(ds.pipeline.transforms[0], LoadMultiModalImageFromFiles)
    assert isinstance(ds.pipeline.transforms[1], LoadMultiModalAnnotations)
    out = ds[0]
    assert out['img'].shape == (H, W, 12) and out['img'].dtype == np.uint8
    assert out['modality_channels'] == [3, 3, 3, 3]
    np.testing.assert_array_equal(out['gt_seg_map'], position_labels(H, W))


@pytest.mark.parametrize('kwargs, match', [
    (dict(split='training'), r"split \['training'\].*'train', 'val', 'test'"),
    (dict(conditions=['snow']), r"condition \['snow'\].*'cloud'"),
    (dict(cases=['blur']), r"case \['blur'\].*'motionblur'.*'clean'"),
    (dict(modalities=['rgb', 'thermal']), r"\['thermal'\].*'rgb', 'depth', 'event', 'lidar'"),
])
def test_bad_arguments(deliver_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DELIVERDataset(data_root=deliver_root, **kwargs)


def test_empty_filter(deliver_root):
    with pytest.raises(ValueError, match=r"img.*cases=\['overexposure'\]") as err:
        DELIVERDataset(data_root=deliver_root, split='train', cases=['overexposure'])
    assert "split='train'" in str(err.value)
    with pytest.raises(ValueError, match='no sample'):
        DELIVERDataset(data_root=osp.join(deliver_root, 'nowhere'))


def test_missing_modality_file(deliver_root):
    missing = osp.join(deliver_root, 'lidar/fog/train/MAP_3/000003_lidar_front.png')
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match="fog/train/MAP_3/000003") as err:
        DELIVERDataset(data_root=deliver_root, split='train')
    assert missing in str(err.value) and '1 missing' in str(err.value)
    # without the lidar modality the sample is complete
    assert len(DELIVERDataset(data_root=deliver_root, split='train',
                              modalities=['rgb', 'depth', 'event'])) == 3

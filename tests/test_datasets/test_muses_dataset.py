"""MUSESDataset on a tiny tree in the assumed MUSES layout (PNG, .npz and 16-bit modalities)."""
import os.path as osp

import numpy as np
import pytest
from multimodal_fixtures import MUSES_H, MUSES_W, MUSES_SAMPLES, make_muses, write_image

from equiseg_mm.datasets import MUSESDataset
from mmseg.datasets import CityscapesDataset

SUFFIXES = dict(lidar='_lidar.npz')
LOAD = [dict(type='LoadMultiModalImageFromFiles', channels=dict(lidar=2, radar=1)),
        dict(type='LoadMultiModalAnnotations')]


def _names(ds):
    return [info['sample_name'] for info in ds.load_data_list()]


def test_train_split_data_infos(muses_root):
    ds = MUSESDataset(data_root=muses_root, split='train', modality_suffixes=SUFFIXES)
    assert _names(ds) == ['train/clear/day/REC0001_frame_000001',
                          'train/fog/night/REC0002_frame_000002',
                          'train/snow/day/REC0003_frame_000003']
    info = ds.get_data_info(1)
    sub = 'train/fog/night/REC0002_frame_000002'
    assert info['modality_paths'] == {
        'rgb': osp.join(muses_root, 'frame_camera', sub + '_frame_camera.png'),
        'event': osp.join(muses_root, 'event_camera', sub + '_event_camera.png'),
        'lidar': osp.join(muses_root, 'lidar', sub + '_lidar.npz'),
    }
    assert info['seg_map_path'] == osp.join(muses_root, 'gt_semantic',
                                            sub + '_gt_labelTrainIds.png')
    assert (info['condition'], info['time_of_day']) == ('fog', 'night')
    assert info['num_classes'] == 19 and info['reduce_zero_label'] is False
    assert ds.metainfo['classes'] == CityscapesDataset.METAINFO['classes']
    assert ds.metainfo['palette'] == CityscapesDataset.METAINFO['palette']
    assert ds.metainfo['modalities'] == ('rgb', 'event', 'lidar')


def test_filters(muses_root):
    kw = dict(data_root=muses_root, modality_suffixes=SUFFIXES)
    assert _names(MUSESDataset(split='val', **kw)) == ['val/rain/night/REC0004_frame_000004']
    night = MUSESDataset(split='train', times_of_day=['night'], **kw)
    assert [i['time_of_day'] for i in night.load_data_list()] == ['night']
    weather = MUSESDataset(split='train', weathers=['clear', 'snow'], **kw)
    assert [i['condition'] for i in weather.load_data_list()] == ['clear', 'snow']
    both = MUSESDataset(split='train', weathers=['snow', 'fog'], times_of_day=['day'], **kw)
    assert _names(both) == ['train/snow/day/REC0003_frame_000003']


def test_loads_png_npz_and_16bit_modalities(muses_root):
    ds = MUSESDataset(data_root=muses_root, split='val', pipeline=LOAD,
                      modalities=['rgb', 'event', 'lidar', 'radar'],
                      modality_suffixes=SUFFIXES)
    out = ds[0]
    img = out['img']
    assert img.shape == (MUSES_H, MUSES_W, 3 + 3 + 2 + 1) and img.dtype == np.float32
    assert out['modality_channels'] == [3, 3, 2, 1]
    rows, cols = np.mgrid[:MUSES_H, :MUSES_W]
    np.testing.assert_array_equal(img[..., 0], rows)  # rgb (BGR file order kept)
    np.testing.assert_array_equal(img[..., 3], rows // 2)  # half-size event, nearest
    np.testing.assert_array_equal(img[..., 4], cols // 2)
    np.testing.assert_allclose(img[..., 6], rows * 0.5)  # npz: first array, float
    np.testing.assert_allclose(img[..., 7], cols * 0.25)
    np.testing.assert_array_equal(img[..., 8], rows * 1000 + cols)  # 16-bit, not rescaled
    gt = out['gt_seg_map']
    assert gt[0, 0] == 255  # ignore is never mapped to a class
    np.testing.assert_array_equal(gt[1:], ((rows + cols) % 19)[1:])


def test_label_value_out_of_range(muses_root):
    label = osp.join(muses_root, 'gt_semantic', 'val/rain/night/'
                     'REC0004_frame_000004_gt_labelTrainIds.png')
    bad = np.zeros((MUSES_H, MUSES_W), np.uint8)
    bad[2, 3], bad[4, 5] = 19, 254
    write_image(label, bad)
    ds = MUSESDataset(data_root=muses_root, split='val', pipeline=LOAD,
                      modality_suffixes=SUFFIXES)
    with pytest.raises(ValueError, match=r'\[19, 254\].*0\.\.18 or ignore 255') as err:
        ds[0]
    assert label in str(err.value)


def test_default_suffix_is_png_and_missing_file_is_named(muses_root):
    # the fixture's lidar is .npz, so the default '_lidar.png' is missing
    with pytest.raises(FileNotFoundError, match=r"'train/clear/day/REC0001_frame_000001'.*"
                       r"_lidar\.png"):
        MUSESDataset(data_root=muses_root, split='train')


@pytest.mark.parametrize('kwargs, match', [
    (dict(split='testing'), r"split \['testing'\]"),
    (dict(weathers=['sunny']), r"weather \['sunny'\].*'clear', 'fog', 'rain', 'snow'"),
    (dict(times_of_day=['dusk']), r"time of day \['dusk'\].*'day', 'night'"),
    (dict(modalities=['rgb', 'thermal']), r"\['thermal'\].*'radar'"),
])
def test_bad_arguments(muses_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MUSESDataset(data_root=muses_root, modality_suffixes=SUFFIXES, **kwargs)


def test_empty_filter(tmp_path):
    root = make_muses(tmp_path, samples=MUSES_SAMPLES[:1])
    with pytest.raises(ValueError, match=r"frame_camera.*weathers=\['clear'\], "
                       r"times_of_day=\['night'\]"):
        MUSESDataset(data_root=root, weathers=['clear'], times_of_day=['night'])

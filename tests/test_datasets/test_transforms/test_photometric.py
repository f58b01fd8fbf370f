import equiseg_mm  # noqa: F401  (compat fixes first)
import numpy as np
import pytest
from mmseg.datasets.transforms import PhotoMetricDistortion
from mmseg.registry import TRANSFORMS

from equiseg_mm.datasets.transforms import MultiModalPhotoMetricDistortion

H, W = 12, 20


def make_results(modalities=('rgb', 'depth', 'event', 'lidar'), channels=(3, 3, 3, 3),
                 dtype=np.uint8):
    img = np.random.default_rng(0).integers(30, 220, (H, W, sum(channels))).astype(dtype)
    return dict(img=img, modalities=list(modalities), modality_channels=list(channels))


@pytest.mark.parametrize('seed', range(5))
def test_rgb_gets_mmseg_distortion_and_others_untouched(seed):
    results = make_results()
    original = results['img'].copy()
    np.random.seed(seed)
    out = MultiModalPhotoMetricDistortion()(dict(results))['img']
    np.random.seed(seed)
    expected = PhotoMetricDistortion()(dict(img=original[..., :3].copy()))['img']
    assert out.shape == original.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., :3], expected)   # the same draws as mmseg's
    np.testing.assert_array_equal(out[..., 3:], original[..., 3:])


def test_distortion_really_changes_rgb():
    results = make_results()
    original = results['img'].copy()
    np.random.seed(3)
    changed = [not np.array_equal(MultiModalPhotoMetricDistortion()(dict(results))['img'][..., :3],
                                  original[..., :3]) for _ in range(5)]
    assert any(changed)


def test_configurable_modality_not_first_and_float_stack():
    results = make_results(modalities=('depth', 'cam', 'lidar'), channels=(1, 3, 2),
                           dtype=np.float32)
    original = results['img'].copy()
    t = TRANSFORMS.build(dict(type='MultiModalPhotoMetricDistortion', modality='cam',
                              brightness_delta=64))
    for seed in range(5):
        np.random.seed(seed)
        out = t(dict(results))['img']
        assert out.dtype == np.float32 and out.shape == original.shape
        np.testing.assert_array_equal(out[..., :1], original[..., :1])
        np.testing.assert_array_equal(out[..., 4:], original[..., 4:])
    assert "modality='cam'" in repr(t)


def test_errors():
    with pytest.raises(ValueError, match=r"'rgb'.*\['depth', 'lidar'\]"):
        MultiModalPhotoMetricDistortion()(make_results(('depth', 'lidar'), (3, 3)))
    with pytest.raises(ValueError, match=r"'rgb' has 1 channels"):
        MultiModalPhotoMetricDistortion()(make_results(('rgb', 'depth'), (1, 3)))
    with pytest.raises(ValueError, match='modality'):
        MultiModalPhotoMetricDistortion(modality=['rgb'])

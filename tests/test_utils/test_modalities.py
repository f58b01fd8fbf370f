import pytest

from equiseg_mm.utils import ModalitySpec, channel_slices, modality_names
from equiseg_mm.utils.modalities import IMAGENET_MEAN


def test_spec_slices_and_defaults():
    spec = ModalitySpec(['rgb', 'depth', 'event'], [3, 1, 2])
    assert spec.names == ('rgb', 'depth', 'event') and spec.channels == (3, 1, 2)
    assert spec.slices == dict(rgb=slice(0, 3), depth=slice(3, 4), event=slice(4, 6))
    assert spec.total == 6
    assert ModalitySpec(['rgb', 'depth']).channels == (3, 3)
    assert channel_slices(['a', 'b'], [2, 1]) == dict(a=slice(0, 2), b=slice(2, 3))


def test_select_orders_and_names_unknown_modalities():
    spec = ModalitySpec(['rgb', 'depth', 'event'])
    assert spec.select(['event', 'rgb', 'event']) == ('rgb', 'event')
    assert spec.select('depth') == ('depth', )
    with pytest.raises(ValueError, match=r"unknown modality in x \['lidar'\]; allowed values are "
                                         r"\['rgb', 'depth', 'event'\]"):
        spec.select(['rgb', 'lidar'], 'modality in x')


def test_per_channel_statistics():
    spec = ModalitySpec(['rgb', 'depth'], [3, 1])
    assert spec.per_channel(None, 'mean', IMAGENET_MEAN) == pytest.approx(
        list(IMAGENET_MEAN) + [sum(IMAGENET_MEAN) / 3])
    assert spec.per_channel(dict(depth=[5], rgb=[1, 2, 3]), 'mean', IMAGENET_MEAN) == [1, 2, 3, 5]
    with pytest.raises(ValueError, match=r"std for modality 'depth' has 3 values.*1 channels"):
        spec.per_channel([1, 2, 3], 'std', IMAGENET_MEAN)
    with pytest.raises(ValueError, match=r"mean has no entry for modalities \['depth'\]"):
        spec.per_channel(dict(rgb=[1, 2, 3]), 'mean', IMAGENET_MEAN)


@pytest.mark.parametrize('names, channels, match', [
    ([], None, 'non-empty'), ('rgb', None, 'non-empty'), (['rgb', 'rgb'], None, 'unique'),
    (['rgb', 'depth'], [3], 'got 2 modalities'), (['rgb'], [0], 'at least 1'),
])
def test_bad_specs(names, channels, match):
    with pytest.raises(ValueError, match=match):
        ModalitySpec(names, channels)
    if channels is None:
        with pytest.raises(ValueError, match=match):
            modality_names(names)

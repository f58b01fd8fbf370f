import equiseg_mm  # noqa: F401  (compat fixes first)
import numpy as np
import pytest
from mmseg.registry import TRANSFORMS

from equiseg_mm.datasets.transforms import SimulateSensorFailure
from equiseg_mm.datasets import DELIVERDataset
from equiseg_mm.datasets.transforms.simulate_sensor_failure import (FAILURE_CASES,
                                                                    corrupt_modality)
from equiseg_mm.utils import seed_from

H, W = 24, 32
MODALITIES = ['rgb', 'depth', 'event', 'lidar']
SLICES = dict(rgb=slice(0, 3), depth=slice(3, 6), event=slice(6, 9), lidar=slice(9, 12))


def make_results(path='a/000001_rgb_front.png', seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 200, (H, W, 12)).astype(dtype)
    img[:, W // 2:, :3] = 230  # an edge in RGB, so blur has something to smear
    lidar = np.zeros((H, W, 3), dtype)  # sparse returns on every other row, like a scan
    lidar[::2] = rng.integers(1, 255, (H // 2, W, 3))
    img[..., SLICES['lidar']] = lidar
    return dict(img=img, img_path=path, modalities=list(MODALITIES),
                modality_channels=[3, 3, 3, 3])


def run(case, results=None, **kwargs):
    results = make_results() if results is None else results
    original = results['img'].copy()
    out = SimulateSensorFailure(case=case, **kwargs)(dict(results))
    return original, out


@pytest.mark.parametrize('case', list(FAILURE_CASES))
def test_each_case_changes_only_its_modality(case):
    original, out = run(case)
    img = out['img']
    assert img.shape == original.shape and img.dtype == original.dtype
    target = FAILURE_CASES[case]
    assert not np.array_equal(img[..., SLICES[target]], original[..., SLICES[target]])
    for name, sl in SLICES.items():
        if name != target:
            np.testing.assert_array_equal(img[..., sl], original[..., sl])
    assert out['case'] == case


def test_case_effects():
    original, over = run('overexposure')
    _, under = run('underexposure')
    rgb = original[..., :3].astype(float)
    assert over['img'][..., :3].mean() > rgb.mean() + 15
    dark = (np.random.default_rng(2).uniform(0, 30, (H, W, 3))).astype(np.uint8)
    for severity, share in [(1, 0.1), (4, 0.7)]:
        out = corrupt_modality(dark, 'overexposure', severity)   # even a dark frame saturates
        assert abs((out == 255).any(-1).mean() - share) < 0.1
    assert under['img'][..., :3].mean() < 0.5 * rgb.mean()

    _, blur = run('motionblur', severity=5)
    def grad_energy(a):
        a = a.astype(float)
        return np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()
    assert grad_energy(blur['img'][..., :3]) < 0.7 * grad_energy(rgb)


def test_lidarjitter_moves_returns_without_inventing_them():
    original, out = run('lidarjitter', severity=5)
    before, after = original[..., 9:12], out['img'][..., 9:12]
    # returns only move: every jittered point is one of the original points
    orig_points = {tuple(p) for p in before.reshape(-1, 3) if p.any()}
    new_points = {tuple(p) for p in after.reshape(-1, 3) if p.any()}
    assert new_points <= orig_points
    assert (after.any(-1)).sum() <= (before.any(-1)).sum()
    # and they really moved: some returns now land on the empty odd rows
    assert after[1::2].any()


def test_eventlowres_reduces_resolution():
    original, out = run('eventlowres', severity=3)  # factor 4
    event = out['img'][..., 6:9]
    blocks = np.repeat(np.repeat(event[::4, ::4], 4, axis=0), 4, axis=1)
    np.testing.assert_array_equal(event, blocks)
    # the low-resolution image is the 4x4 block average of the original, up to rounding
    mean = original[..., 6:9].reshape(H // 4, 4, W // 4, 4, 3).astype(float).mean((1, 3))
    assert np.abs(event[::4, ::4] - mean).max() <= 1
    small = corrupt_modality(original[..., 6:9], 'eventlowres', 3, keep_size=False)
    assert small.shape == (H // 4, W // 4, 3) and small.dtype == np.uint8


@pytest.mark.parametrize('case', ['motionblur', 'overexposure', 'underexposure', 'lidarjitter'])
def test_deterministic_per_sample_and_different_between_samples(case):
    _, a1 = run(case, make_results('x/000001_rgb_front.png'))
    _, a2 = run(case, make_results('x/000001_rgb_front.png'))
    _, b = run(case, make_results('x/000002_rgb_front.png'))  # same pixels, another sample
    _, c = run(case, make_results('x/000001_rgb_front.png'), seed=7)
    np.testing.assert_array_equal(a1['img'], a2['img'])
    assert not np.array_equal(a1['img'], b['img'])
    assert not np.array_equal(a1['img'], c['img'])


def test_sample_idx_without_path():
    def results(idx):
        r = make_results()
        del r['img_path']
        r['sample_idx'] = idx
        return r
    _, a1 = run('lidarjitter', results(3))
    _, a2 = run('lidarjitter', results(3))
    _, b = run('lidarjitter', results(4))
    np.testing.assert_array_equal(a1['img'], a2['img'])
    assert not np.array_equal(a1['img'], b['img'])


def test_per_sample_seed_is_stable():
    """The draws come from ``default_rng([seed, seed_from(case, img_path)])``; pinned values
    guard the corruption of every sample against changes of the seeding."""
    path = 'x/000001_rgb_front.png'
    assert seed_from('motionblur', path) == 8433559439676707292
    assert seed_from(0, 'rmm', path, bits=63) == 141515269629007969
    assert seed_from('a', 1) == seed_from('a|1') != seed_from('a', 2)
    assert 0 <= seed_from('x', bits=1) <= 1
    with pytest.raises(ValueError, match='bits'):
        seed_from('x', bits=65)
    results = make_results(path)
    part = np.ascontiguousarray(results['img'][..., SLICES['rgb']])
    expected = corrupt_modality(part, 'motionblur', 3,
                                np.random.default_rng([5, seed_from('motionblur', path)]))
    _, out = run('motionblur', results, seed=5)
    np.testing.assert_array_equal(out['img'][..., SLICES['rgb']], expected)


def test_failure_cases_are_the_deliver_cases():
    assert tuple(FAILURE_CASES) == DELIVERDataset.CASES


def test_modality_override_and_other_layouts():
    original, out = run('motionblur', modality='depth')
    np.testing.assert_array_equal(out['img'][..., :3], original[..., :3])
    assert not np.array_equal(out['img'][..., 3:6], original[..., 3:6])

    # a 1-channel lidar placed first, float32 stack
    img = np.random.default_rng(1).uniform(0, 255, (H, W, 4)).astype(np.float32)
    results = dict(img=img.copy(), img_path='p', modalities=['lidar', 'rgb'],
                   modality_channels=[1, 3])
    out = SimulateSensorFailure('lidarjitter')(results)
    assert out['img'].shape == (H, W, 4) and out['img'].dtype == np.float32
    np.testing.assert_array_equal(out['img'][..., 1:], img[..., 1:])


def test_registry_and_repr():
    t = TRANSFORMS.build(dict(type='SimulateSensorFailure', case='eventlowres', severity=2))
    assert isinstance(t, SimulateSensorFailure)
    assert t.modality == 'event'
    assert "case='eventlowres'" in repr(t)


def test_errors():
    with pytest.raises(ValueError, match=r"'blur'.*'motionblur'.*'eventlowres'"):
        SimulateSensorFailure(case='blur')
    with pytest.raises(ValueError, match='severity'):
        SimulateSensorFailure(case='motionblur', severity=0)
    with pytest.raises(ValueError, match='severity'):
        corrupt_modality(np.zeros((4, 4, 3), np.uint8), 'motionblur', severity=6)
    results = make_results()
    results['modalities'] = ['rgb', 'depth', 'lidar', 'thermal']
    with pytest.raises(ValueError, match=r"'event'.*\['rgb', 'depth', 'lidar', 'thermal'\]"):
        SimulateSensorFailure(case='eventlowres')(results)
    with pytest.raises(ValueError, match=r"'thermal'.*\['rgb', 'depth', 'event', 'lidar'\]"):
        SimulateSensorFailure(case='overexposure', modality='thermal')(make_results())

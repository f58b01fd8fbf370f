import equiseg_mm  # noqa: F401  (compat fixes first)
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from equiseg_mm.models import (MultiModalSegDataPreProcessor, get_multimodal_preprocessor,
                               is_multimodal_preprocessor)
from equiseg_mm.models.data_preprocessor import IMAGENET_MEAN, IMAGENET_STD

MODS = ['rgb', 'depth', 'event', 'lidar']


def sample(h, w, idx=0, label=True):
    s = SegDataSample(metainfo=dict(img_path=f'root/{idx:06d}_rgb_front.png', sample_idx=idx))
    if label:
        s.gt_sem_seg = PixelData(data=torch.zeros(1, h, w, dtype=torch.uint8))
    return s


def batch(n=2, c=12, h=6, w=10, value=None, start=0):
    g = torch.Generator().manual_seed(start)
    inputs = [torch.full((c, h, w), value, dtype=torch.uint8) if value is not None else
              torch.randint(0, 256, (c, h, w), generator=g, dtype=torch.uint8)
              for _ in range(n)]
    return dict(inputs=inputs, data_samples=[sample(h, w, start + i) for i in range(n)])


def identity(mods=MODS, channels=None, **kwargs):
    """A preprocessor with mean 0 / std 1 (the output equals the input)."""
    channels = channels or [3] * len(mods)
    return MultiModalSegDataPreProcessor(
        modalities=mods, channels=channels, mean={m: [0.0] * c for m, c in zip(mods, channels)},
        std={m: [1.0] * c for m, c in zip(mods, channels)}, **{'max_normalised': None, **kwargs})


def test_per_modality_normalisation_numerically():
    dp = MODELS.build(dict(
        type='MultiModalSegDataPreProcessor', modalities=['rgb', 'depth'], channels=[3, 1],
        mean=dict(rgb=[10, 20, 30], depth=[100]), std=dict(rgb=[2, 4, 5], depth=[50]),
        max_normalised=None))
    data = batch(c=4)
    raw = torch.stack(data['inputs']).float()
    out = dp(data)['inputs']
    expected = raw.clone()
    for ch, (m, s) in enumerate(zip([10, 20, 30, 100], [2, 4, 5, 50])):
        expected[:, ch] = (raw[:, ch] - m) / s
    assert out.shape == (2, 4, 6, 10) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


def test_default_is_imagenet_for_every_modality_and_one_list_for_all():
    dp = MultiModalSegDataPreProcessor(modalities=MODS)
    assert dp.mean.flatten().tolist() == pytest.approx(list(IMAGENET_MEAN) * 4)
    assert dp.std.flatten().tolist() == pytest.approx(list(IMAGENET_STD) * 4)
    dp = MultiModalSegDataPreProcessor(modalities=['rgb', 'depth'], mean=[1, 2, 3], std=[4, 5, 6])
    assert dp.mean.flatten().tolist() == [1, 2, 3, 1, 2, 3]
    assert dp.std.flatten().tolist() == [4, 5, 6, 4, 5, 6]
    # a non-3-channel modality gets the ImageNet average by default
    dp = MultiModalSegDataPreProcessor(modalities=['rgb', 'depth'], channels=[3, 1])
    assert dp.mean.flatten()[3].item() == pytest.approx(sum(IMAGENET_MEAN) / 3)


@pytest.mark.parametrize('mods', [['rgb', 'depth'], ['depth', 'rgb']])
def test_bgr_to_rgb_flips_the_chosen_modalities(mods):
    x = torch.arange(1, 7, dtype=torch.uint8).view(6, 1, 1).expand(6, 2, 3).contiguous()

    def run(**kwargs):
        dp = identity(mods, bgr_to_rgb=True, **kwargs)
        return dp(dict(inputs=[x], data_samples=[sample(2, 3)]))['inputs'][0, :, 0, 0].tolist()

    # default: every 3-channel modality (cv2 decoded all of them as BGR)
    assert run() == [3, 2, 1, 6, 5, 4]
    rgb_first = mods[0] == 'rgb'
    assert run(bgr_modalities=['rgb']) == ([3, 2, 1, 4, 5, 6] if rgb_first else [1, 2, 3, 6, 5, 4])
    assert run(bgr_modalities=['depth']) == ([1, 2, 3, 6, 5, 4] if rgb_first
                                             else [3, 2, 1, 4, 5, 6])


def test_bgr_to_rgb_leaves_other_channel_counts_alone():
    dp = identity(['rgb', 'depth'], channels=[3, 1], bgr_to_rgb=True)
    x = torch.arange(1, 5, dtype=torch.uint8).view(4, 1, 1).expand(4, 2, 3).contiguous()
    out = dp(dict(inputs=[x], data_samples=[sample(2, 3)]))['inputs'][0, :, 0, 0].tolist()
    assert out == [3, 2, 1, 4]


def test_modality_order_mismatch_is_an_error():
    dp = identity(['rgb', 'depth'])
    s = sample(2, 3)
    s.set_metainfo(dict(modalities=['depth', 'rgb'], img_path='a/b_rgb.png'))
    with pytest.raises(ValueError, match=r"b_rgb.png.*\['depth', 'rgb'\].*\['rgb', 'depth'\]"):
        dp(dict(inputs=[torch.zeros(6, 2, 3, dtype=torch.uint8)], data_samples=[s]))
    s.set_metainfo(dict(modalities=['rgb', 'depth']))
    dp(dict(inputs=[torch.zeros(6, 2, 3, dtype=torch.uint8)], data_samples=[s]))


def test_padding_training_and_test():
    dp = identity(size_divisor=8, pad_val=0, seg_pad_val=255)
    data = dict(inputs=[torch.ones(12, 10, 13, dtype=torch.uint8),
                        torch.ones(12, 7, 9, dtype=torch.uint8)],
                data_samples=[sample(10, 13, 0), sample(7, 9, 1)])
    out = dp(data, training=True)
    assert out['inputs'].shape == (2, 12, 16, 16)
    assert out['inputs'][1, :, 7:].eq(0).all() and out['inputs'][1, :, :7, :9].eq(1).all()
    gt = out['data_samples'][1].gt_sem_seg.data
    assert gt.shape == (1, 16, 16) and gt[:, 7:].eq(255).all() and gt[:, :7, :9].eq(0).all()

    dp = identity(size=(12, 20))
    out = dp(dict(inputs=[torch.ones(12, 10, 13, dtype=torch.uint8)],
                  data_samples=[sample(10, 13)]), training=True)
    assert out['inputs'].shape == (1, 12, 12, 20)

    # no size and no size_divisor: training pads to the largest sample
    out = identity()(dict(inputs=[torch.ones(12, 5, 9, dtype=torch.uint8),
                                  torch.ones(12, 7, 4, dtype=torch.uint8)],
                          data_samples=[sample(5, 9), sample(7, 4)]), training=True)
    assert out['inputs'].shape == (2, 12, 7, 9)

    dp = identity(test_cfg=dict(size_divisor=4))
    out = dp(dict(inputs=[torch.ones(12, 5, 9, dtype=torch.uint8)],
                  data_samples=[sample(5, 9, label=False)]))
    assert out['inputs'].shape == (1, 12, 8, 12)
    assert out['data_samples'][0].metainfo['pad_shape'] == (8, 12)


@pytest.mark.parametrize('training', [False, True])
def test_missing_modalities_zero_exactly_those_channels_after_normalisation(training):
    full = MultiModalSegDataPreProcessor(modalities=MODS)
    dp = MultiModalSegDataPreProcessor(modalities=MODS, missing_modalities=['depth', 'lidar'])
    ref = full(batch(), training=training)['inputs']
    out = dp(batch(), training=training)['inputs']
    assert out[:, 3:6].eq(0).all() and out[:, 9:12].eq(0).all()
    torch.testing.assert_close(out[:, :3], ref[:, :3])
    torch.testing.assert_close(out[:, 6:9], ref[:, 6:9])
    assert ref[:, 3:6].ne(0).all()  # zero only after normalisation (raw 0 would not be 0)
    assert dp.missing_modalities == ('depth', 'lidar')


def test_setting_is_read_only_and_protocol_changes_it_between_passes():
    dp = MultiModalSegDataPreProcessor(modalities=MODS)
    ref = dp(batch())['inputs']
    with dp.protocol(missing=('rgb', )):
        assert dp(batch())['inputs'][:, :3].eq(0).all()
    torch.testing.assert_close(dp(batch())['inputs'], ref)
    assert dp.modalities == MODS
    for name, value in [('modalities', ['rgb']), ('missing_modalities', ('rgb', )),
                        ('missing_ratio', 0.5), ('noise_density', 0.1)]:
        with pytest.raises(AttributeError):
            setattr(dp, name, value)
    assert (dp.missing_modalities, dp.missing_ratio, dp.noise_density) == ((), 1.0, 0.0)


def _state(dp):
    return dp.missing_modalities, dp.missing_ratio, dp.noise_density


def test_protocol_sets_the_setting_and_restores_it():
    dp = identity(noise_density=0.05)
    data = batch(h=20, w=20)
    with dp.protocol(missing=['lidar', 'depth'], ratio=0.5, noise=0.0) as pre:
        assert pre is dp
        assert _state(dp) == (('depth', 'lidar'), 0.5, 0.0)  # in modality order
        inside = dp(data)['inputs']
    assert _state(dp) == ((), 1.0, 0.05)
    # the same as the config values
    ref = identity(missing_modalities=['depth', 'lidar'], missing_ratio=0.5)(data)['inputs']
    torch.testing.assert_close(inside, ref)
    # None keeps the current value; a single name is one modality
    with dp.protocol(missing='rgb'):
        assert _state(dp) == (('rgb', ), 1.0, 0.05)
        with dp.protocol(ratio=0.25):  # nests
            assert _state(dp) == (('rgb', ), 0.25, 0.05)
        assert _state(dp) == (('rgb', ), 1.0, 0.05)
    assert _state(dp) == ((), 1.0, 0.05)


def test_protocol_restores_on_error_and_refuses_bad_values():
    dp = identity(missing_modalities=['event'], missing_ratio=0.75)
    with pytest.raises(RuntimeError, match='boom'):
        with dp.protocol(missing=(), ratio=1.0, noise=0.2):
            raise RuntimeError('boom')
    assert _state(dp) == (('event', ), 0.75, 0.0)
    for kwargs, text in [(dict(missing=['thermal']), r"\['thermal'\].*\['rgb', 'depth'"),
                         (dict(missing=MODS), 'leaves no modality'),
                         (dict(missing=['rgb'], ratio=0.0), 'missing_ratio'),
                         (dict(missing=['rgb'], noise=1.5), 'noise_density')]:
        with pytest.raises(ValueError, match=text):
            with dp.protocol(**kwargs):
                pytest.fail('the block must not run under a refused setting')
        assert _state(dp) == (('event', ), 0.75, 0.0)


def test_protocol_reseeds_samples_without_identity():
    """Inputs without data samples draw from the generator that every setting re-seeds."""
    dp = identity()
    data = dict(inputs=batch(h=20, w=20, value=7)['inputs'])
    outs = []
    for _ in range(2):
        with dp.protocol(missing=['depth'], ratio=0.5):
            outs.append([dp(data)['inputs'] for _ in range(2)])
    assert outs[0][0][:, 3:6].eq(0).any()
    assert not torch.equal(outs[0][0], outs[0][1])  # the generator moves on within a block
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_is_and_get_multimodal_preprocessor():
    from mmengine.model import BaseDataPreprocessor, BaseModel
    dp = MultiModalSegDataPreProcessor(modalities=MODS)
    assert is_multimodal_preprocessor(dp)
    assert not is_multimodal_preprocessor(BaseDataPreprocessor())
    assert not is_multimodal_preprocessor(None)

    class Model(BaseModel):
        def forward(self, *args, **kwargs):
            pass

    assert get_multimodal_preprocessor(Model(data_preprocessor=dp)) is dp
    with pytest.raises(TypeError, match=r'my_tool needs .*MultiModalSegDataPreProcessor.*got '
                                        r'BaseDataPreprocessor'):
        get_multimodal_preprocessor(Model(), 'my_tool')

def test_rng_state_dict_continues_the_fallback_generator():
    def build():
        return MultiModalSegDataPreProcessor(modalities=MODS, missing_modalities=['rgb'],
                                             missing_ratio=0.5)

    def unnamed():  # no img_path / sample_idx: the fallback generator draws the RMM mask
        return dict(inputs=batch()['inputs'])

    dp = build()
    first = dp(unnamed())['inputs']
    state = dp.rng_state_dict()
    assert set(state) == {'fallback_generator'}
    expected = dp(unnamed())['inputs']
    assert not torch.equal(expected, first)
    resumed = build()
    resumed.load_rng_state_dict(state)
    assert torch.equal(resumed(unnamed())['inputs'], expected)


def test_rmm_ratio_seeded_and_nested():
    def zeros(ratio, seed=0, start=0, unit='value'):
        dp = identity(missing_modalities=['depth'], missing_ratio=ratio, seed=seed,
                      random_unit=unit)
        out = dp(batch(n=2, h=40, w=40, value=7, start=start))['inputs']
        assert out[:, [0, 1, 2, 6, 7, 8, 9, 10, 11]].eq(7).all()  # other modalities intact
        return out[:, 3:6].eq(0)

    z25, z50 = zeros(0.25), zeros(0.5)
    assert abs(z25.float().mean().item() - 0.25) < 0.03
    assert abs(z50.float().mean().item() - 0.5) < 0.03
    assert torch.equal(z25, zeros(0.25))                 # reproducible pass
    assert not torch.equal(z25, zeros(0.25, seed=1))    # the seed matters
    assert not torch.equal(z25[0], z25[1])              # samples differ
    assert torch.equal(z25[1], zeros(0.25, start=1)[0])  # keyed by sample, not batch slot
    assert not torch.equal(z25[0], zeros(0.25, start=5)[0])
    assert (z25 & ~z50).sum() == 0                      # nested across ratios
    zp = zeros(0.5, unit='pixel')
    assert torch.equal(zp[:, 0], zp[:, 1]) and torch.equal(zp[:, 0], zp[:, 2])


def test_nm_salt_and_pepper_on_every_modality_before_normalisation():
    dp = MultiModalSegDataPreProcessor(modalities=MODS, mean=[100, 100, 100], std=[2, 2, 2],
                                       noise_density=0.2, noise_max=250, max_normalised=None)
    out = dp(batch(n=2, h=40, w=40, value=100))['inputs']
    pepper, salt, clean = out.eq(-50), out.eq(75), out.eq(0)
    assert (pepper | salt | clean).all()
    for m in range(4):
        part = slice(3 * m, 3 * m + 3)
        assert abs(pepper[:, part].float().mean().item() - 0.1) < 0.03
        assert abs(salt[:, part].float().mean().item() - 0.1) < 0.03
    assert torch.equal(out, dp(batch(n=2, h=40, w=40, value=100))['inputs'])


def test_modality_dropout_training_only_and_never_all():
    dp = identity(modality_dropout=0.8)
    data = batch(n=64, h=2, w=2, value=5)
    out = dp(data, training=True)['inputs']
    kept = out.view(64, 4, 3, 2, 2).ne(0).flatten(2).all(-1)       # (B, N)
    dropped = out.view(64, 4, 3, 2, 2).eq(0).flatten(2).all(-1)
    assert (kept | dropped).all()          # whole modalities, never parts
    assert kept.any(1).all()               # never every modality of a sample
    assert dropped.any()
    assert torch.equal(dp(batch(n=64, h=2, w=2, value=5))['inputs'],
                       torch.full((64, 12, 2, 2), 5.0))  # not at test time

    dp = identity(modality_dropout=1.0, missing_modalities=['depth'])
    out = dp(batch(n=32, h=2, w=2, value=5), training=True)['inputs'].view(32, 4, 3, 2, 2)
    kept = out.ne(0).flatten(2).all(-1)
    assert kept.sum(1).eq(1).all() and not kept[:, 1].any()


@pytest.mark.parametrize('kwargs, match', [
    (dict(missing_modalities=['thermal']), r"\['thermal'\].*\['rgb', 'depth', 'event', 'lidar'\]"),
    (dict(mean=[1, 2], std=[1, 1]), r"mean for modality 'rgb' has 2 values.*3 channels"),
    (dict(mean=dict(rgb=[0, 0, 0]), std=[1, 1, 1]), r"mean has no entry for modalities \['depth'"),
    (dict(mean=dict(rgbx=[0, 0, 0]), std=[1, 1, 1]), r"\['rgbx'\].*allowed values"),
    (dict(std=[1, 0, 1]), 'positive'),
    (dict(channels=[3, 3]), 'got 4 modalities'),
    (dict(missing_ratio=1.5), 'missing_ratio'),
    (dict(modality_dropout=-0.1), 'modality_dropout'),
    (dict(random_unit='channel'), r"random_unit.*\['value', 'pixel'\]"),
    (dict(size=(8, 8), size_divisor=4), 'size'),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiModalSegDataPreProcessor(modalities=MODS, **kwargs)


def test_bad_rgb_modality_and_channel_mismatch_at_forward():
    with pytest.raises(ValueError, match=r"bgr_modalities \['rgb'\].*\['depth', 'lidar'\]"):
        MultiModalSegDataPreProcessor(modalities=['depth', 'lidar'], bgr_to_rgb=True,
                                      bgr_modalities=['rgb'])
    with pytest.raises(ValueError, match='3 channels'):
        MultiModalSegDataPreProcessor(modalities=['rgb'], channels=[1], bgr_to_rgb=True,
                                      bgr_modalities=['rgb'])
    dp = MultiModalSegDataPreProcessor(modalities=MODS)
    with pytest.raises(ValueError, match=r'9 channels but channels=\[3, 3, 3, 3\].*12'):
        dp(batch(c=9))


def _keep_stats(dp, n=20000, seed=0):
    """Kept fractions per modality and the (B, N) keep mask of ``n`` seeded draws."""
    keep = dp._dropout_keep(n, generator=torch.Generator().manual_seed(seed))
    assert keep.shape == (n, len(dp.modalities)) and keep.any(1).all()
    return keep.float().mean(0).tolist(), keep


def test_modality_dropout_per_modality_rates():
    # unnamed modalities are never dropped, so no sample needs the keep-one fallback here
    dp = identity(modality_dropout=dict(rgb=0.2, depth=0.5))
    assert dp.dropout_rates == dict(rgb=0.2, depth=0.5, event=0.0, lidar=0.0)
    kept, keep = _keep_stats(dp)
    assert kept[0] == pytest.approx(0.8, abs=0.015) and kept[1] == pytest.approx(0.5, abs=0.015)
    assert kept[2] == kept[3] == 1.0
    # independent draws per modality
    assert (keep[:, 0] & keep[:, 1]).float().mean().item() == pytest.approx(0.4, abs=0.015)


def test_modality_dropout_fallback_keeps_one_in_proportion_to_keep_rates():
    dp = identity(mods=['rgb', 'depth'], modality_dropout=dict(rgb=0.5, depth=0.9))
    kept, keep = _keep_stats(dp)
    # both would go with probability 0.45; then rgb is kept with 0.5 / (0.5 + 0.1) = 5/6
    assert kept[0] == pytest.approx(0.5 + 0.45 * 5 / 6, abs=0.015)
    assert kept[1] == pytest.approx(0.1 + 0.45 / 6, abs=0.015)
    assert (keep[:, 0] & keep[:, 1]).float().mean().item() == pytest.approx(0.05, abs=0.01)
    # rate 1 next to a lower rate: never kept, the other one always
    kept, _ = _keep_stats(identity(mods=['rgb', 'depth'], modality_dropout=dict(rgb=1.0,
                                                                                depth=0.5)))
    assert kept == [0.0, 1.0]
    # one rate for all (here every rate 1): exactly one kept per sample, drawn uniformly
    kept, keep = _keep_stats(identity(modality_dropout=1.0))
    assert keep.sum(1).eq(1).all()
    assert all(k == pytest.approx(0.25, abs=0.015) for k in kept)


def test_modality_dropout_never_drop_is_honoured():
    dp = identity(modality_dropout=0.9, never_drop=['rgb'])
    assert dp.dropout_rates == dict(rgb=0.0, depth=0.9, event=0.9, lidar=0.9)
    assert dp.never_drop == ('rgb', )
    kept, _ = _keep_stats(dp)
    assert kept[0] == 1.0 and all(k == pytest.approx(0.1, abs=0.015) for k in kept[1:])
    # through forward, with the global generator the runner seeds
    torch.manual_seed(0)
    out = dp(batch(n=256, h=2, w=2, value=5), training=True)['inputs'].view(256, 4, 3, 2, 2)
    kept = out.ne(0).flatten(2).all(-1)
    assert (kept | out.eq(0).flatten(2).all(-1)).all()  # whole modalities
    assert kept[:, 0].all() and 0.03 < kept[:, 1:].float().mean().item() < 0.2
    # a string names one modality; a missing modality is not dropped twice nor chosen to keep
    dp = identity(modality_dropout=1.0, never_drop='depth', missing_modalities=['rgb'])
    out = dp(batch(n=16, h=2, w=2, value=5), training=True)['inputs'].view(16, 4, 3, 2, 2)
    assert out.ne(0).flatten(2).all(-1).tolist() == [[False, True, False, False]] * 16


def test_modality_dropout_from_a_config_dict():
    from mmengine.config import ConfigDict
    dp = MODELS.build(ConfigDict(type='MultiModalSegDataPreProcessor', modalities=MODS,
                                 modality_dropout=ConfigDict(depth=0.5), never_drop=['rgb']))
    assert dp.dropout_rates == dict(rgb=0.0, depth=0.5, event=0.0, lidar=0.0)


@pytest.mark.parametrize('kwargs, match', [
    (dict(modality_dropout=1.5), r'modality_dropout must be a number in \[0, 1\], got 1.5'),
    (dict(modality_dropout='0.3'), r"modality_dropout must be a number in \[0, 1\], got '0.3'"),
    (dict(modality_dropout=True), r'modality_dropout must be a number in \[0, 1\], got True'),
    (dict(modality_dropout=dict(depth=-0.5)),
     r"modality_dropout\['depth'\] must be a number in \[0, 1\], got -0.5"),
    (dict(modality_dropout=dict(thermal=0.5)),
     r"unknown modality in modality_dropout \['thermal'\]; allowed values are "
     r"\['rgb', 'depth', 'event', 'lidar'\]"),
    (dict(never_drop=['thermal']),
     r"unknown modality in never_drop \['thermal'\]; allowed values are \['rgb'"),
    (dict(never_drop=3), 'never_drop must be a list of modality names, got 3'),
    (dict(modality_dropout=dict(rgb=0.2, depth=0.5), never_drop=['depth']),
     r"\['depth'\] are in never_drop but have a drop rate"),
])
def test_bad_modality_dropout(kwargs, match):
    with pytest.raises(ValueError, match=match):
        identity(**kwargs)


def test_padding_and_stacking_are_mmseg_own_forward():
    """The tail is ``SegDataPreProcessor.forward`` itself, fed the per-sample results: already
    flipped and normalised (so it neither flips nor normalises again), in training with the
    batch augments."""
    from unittest import mock

    from mmseg.models.data_preprocessor import SegDataPreProcessor
    calls, augmented = [], []

    def augment(inputs, data_samples):
        augmented.append(inputs.shape)
        return inputs * 2, data_samples

    dp = MultiModalSegDataPreProcessor(modalities=['rgb', 'depth'], bgr_to_rgb=True,
                                       size_divisor=8, batch_augments=None)
    dp.batch_augments = augment
    data = batch(n=2, c=6, h=5, w=7)
    expected = [((x[[2, 1, 0, 5, 4, 3]].float() - dp.mean) / dp.std) for x in data['inputs']]
    real = SegDataPreProcessor.forward

    def spy(self, data, training=False):
        calls.append([x.clone() for x in data['inputs']])
        return real(self, data, training)

    with mock.patch.object(SegDataPreProcessor, 'forward', spy):
        out = dp(data, training=True)
    assert len(calls) == 1 and all(torch.equal(a, b) for a, b in zip(calls[0], expected))
    assert augmented == [(2, 6, 8, 8)]
    torch.testing.assert_close(out['inputs'][:, :, :5, :7], 2 * torch.stack(expected))


def test_statistics_that_do_not_fit_the_data_stop_with_the_ones_to_use():
    """A 16-bit depth image (values ~20,000) with the default 8-bit statistics is an error that
    names the sample, the modality, both statistics and the tool; 8-bit data passes."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    dp = MultiModalSegDataPreProcessor(modalities=['rgb', 'depth'], channels=[3, 1])
    rgb = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8).float()
    depth = torch.full((1, 8, 8), 20000.)
    sample = SegDataSample(metainfo=dict(img_path='data/0042_rgb.png', sample_idx=42))
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"sample 42 \(data/0042_rgb.png\): modality 'depth' has "
                                         r'values in \[20000, 20000\].*mean / std per channel: '
                                         r'\[20000.0\] / \[0.0\].*modality_stats.py'):
        dp(dict(inputs=[torch.cat([rgb, depth])], data_samples=[sample]))
    fitted = MultiModalSegDataPreProcessor(
        modalities=['rgb', 'depth'], channels=[3, 1], mean=dict(rgb=[123, 117, 104],
                                                              depth=[20000]),
        std=dict(rgb=[58, 57, 57], depth=[5000]))
    fitted(dict(inputs=[torch.cat([rgb, depth])], data_samples=[sample]))
    dp(dict(inputs=[torch.cat([rgb, rgb[:1]])], data_samples=[sample]))  # 8-bit depth passes
    MultiModalSegDataPreProcessor(modalities=['rgb', 'depth'], channels=[3, 1],
                                  max_normalised=None)(
        dict(inputs=[torch.cat([rgb, depth])], data_samples=[sample]))  # the check is off

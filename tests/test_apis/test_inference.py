"""The inference API on the tiny synthetic data: a frame with any modality absent must give what
the dataset pipeline gives for the same sample under ``protocol(missing=...)``."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch

import equiseg_mm  # noqa: F401,I001  (first: compat fixes, registration)
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

from equiseg_mm.apis import inference_multimodal, init_multimodal_model, save_prediction
from _synthetic_deliver import make_synthetic_deliver

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'equiseg', 'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
MODS = ['rgb', 'depth', 'event', 'lidar']
H, W = 48, 64
DIMS = [8, 8, 8, 8]
HEADS = [1, 1, 1, 1]


def tiny_options(data_root):
    """cfg_options shrinking the synthetic config's model to 8-channel one-layer stages."""
    return {
        'model.backbone.embed_dims': 8, 'model.backbone.num_layers': [1, 1, 1, 1],
        'model.backbone.num_heads': HEADS, 'model.neck.in_channels': DIMS,
        'model.neck.num_heads': HEADS, 'model.decode_head.in_channels': DIMS,
        'model.decode_head.channels': 16, 'model.auxiliary_head.in_channels': DIMS,
        'test_dataloader.dataset.data_root': str(data_root),
    }


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """Tiny data, a random-weight model and the test dataset built from the same config."""
    root = tmp_path_factory.mktemp('infer') / 'synthetic_deliver'
    make_synthetic_deliver(str(root), num_train=4, num_val=4, num_test=4, size=(H, W))
    torch.manual_seed(0)
    model = init_multimodal_model(CONFIG, cfg_options=tiny_options(root))
    init_default_scope('mmseg')
    dataset = DATASETS.build(model.cfg.test_dataloader.dataset)
    return model, dataset


def _reference(model, dataset, idx, missing):
    """The dataset-pipeline prediction of sample ``idx`` with ``missing`` zeroed."""
    with model.data_preprocessor.protocol(missing=missing), torch.no_grad():
        return model.test_step(pseudo_collate([dataset[idx]]))[0]


def _files(dataset, idx):
    return dict(dataset.get_data_info(idx)['modality_paths'])


@pytest.mark.parametrize('missing', [(), ('rgb', ), ('depth', ), ('event', ), ('lidar', ),
                                     ('rgb', 'event', 'lidar')])
def test_absent_modality_equals_dataset_path_with_missing_modalities(world, missing):
    model, dataset = world
    files = _files(dataset, 1)
    given = {m: (None if m in missing else p) for m, p in files.items()}
    if missing:
        del given[missing[0]]  # a missing key and a None value both mean absent
    out = inference_multimodal(model, given)
    ref = _reference(model, dataset, 1, missing)
    assert out.pred_sem_seg.data.shape == (1, H, W)
    assert torch.equal(out.seg_logits.data, ref.seg_logits.data)
    assert torch.equal(out.pred_sem_seg.data, ref.pred_sem_seg.data)
    assert out.metainfo['missing_modalities'] == missing
    assert out.metainfo['present_modalities'] == tuple(m for m in MODS if m not in missing)
    assert model.data_preprocessor.missing_modalities == ()
    if missing:  # the placeholder really is zeroed: without the protocol the logits differ
        full = _reference(model, dataset, 1, ())
        assert not torch.equal(out.seg_logits.data, full.seg_logits.data)


def test_absent_sensors_branches_do_not_run_and_change_nothing(world):
    """Two of four sensors absent: from the second frame of a size on, their branches do not
    run, and the prediction is bit-identical to running them on zeros."""
    model, dataset = world
    backbone = model.backbone
    calls = []
    hooks = [b.register_forward_pre_hook(lambda m, a, n=n: calls.append(n))
             for n, b in enumerate(backbone.branches)]
    try:
        outs = []
        for idx in (0, 1):
            files = _files(dataset, idx)
            calls.clear()
            outs.append(inference_multimodal(model, dict(rgb=files['rgb'],
                                                         event=files['event'])))
        skipped_calls = list(calls)
        cache, backbone.branch_cache = backbone.branch_cache, None
        try:
            ran = inference_multimodal(model, dict(rgb=files['rgb'], event=files['event']))
        finally:
            backbone.branch_cache = cache
    finally:
        for hook in hooks:
            hook.remove()
    assert skipped_calls == [0, 2]  # rgb and event only: depth and lidar reuse their outputs
    assert torch.equal(outs[1].seg_logits.data, ran.seg_logits.data)
    assert torch.equal(outs[1].pred_sem_seg.data, ran.pred_sem_seg.data)


def test_arrays_equal_files_and_grey_arrays_are_repeated(world):
    model, dataset = world
    files = _files(dataset, 0)
    arrays = {m: mmcv.imread(p, flag='unchanged') for m, p in files.items()}
    from_files = inference_multimodal(model, files)
    from_arrays = inference_multimodal(model, arrays)
    assert torch.equal(from_files.seg_logits.data, from_arrays.seg_logits.data)

    grey = arrays['depth'][..., 0]
    mixed = dict(files, depth=grey)
    as_three = dict(files, depth=np.repeat(grey[..., None], 3, axis=2))
    assert torch.equal(inference_multimodal(model, mixed).seg_logits.data,
                       inference_multimodal(model, as_three).seg_logits.data)


def test_smaller_modality_is_resized_and_rgb_may_be_absent(world, monkeypatch):
    from equiseg_mm.datasets.transforms import load_multi_modal_image_from_files as loader_mod
    notices = []
    monkeypatch.setattr(loader_mod, 'print_log', lambda msg, **kw: notices.append(msg))

    def notice():
        text = '\n'.join(notices)
        notices.clear()
        return text
    model, dataset = world
    files = _files(dataset, 0)
    event = mmcv.imread(files['event'], flag='unchanged')
    small = event[::2, ::2]  # 24x32, the event-low-resolution case
    out = inference_multimodal(model, dict(rgb=files['rgb'], event=small))
    assert out.pred_sem_seg.data.shape == (1, H, W)  # RGB sets the size
    text = notice()
    assert f'event (array, {H // 2}x{W // 2}) was resized to {H}x{W}' in text
    assert 'size of rgb' in text
    # nearest resize of the small one equals giving the resized array
    nearest = mmcv.imresize(small, (W, H), interpolation='nearest')
    assert torch.equal(
        inference_multimodal(model, dict(rgb=files['rgb'], event=small)).seg_logits.data,
        inference_multimodal(model, dict(rgb=files['rgb'], event=nearest)).seg_logits.data)
    assert notice().count('resized') == 1  # the small array only, not the resized one
    # the first present modality in the model's order sets the size (RGB when given, as in the
    # dataset path): a smaller RGB frame is not blown up to a larger depth frame's size, that is
    # an error that names both, as in the dataset
    small_rgb = mmcv.imread(files['rgb'])[::2, ::2]
    with pytest.raises(ValueError, match=r"modality 'depth'.*'rgb' modality is 24x32"):
        inference_multimodal(model, dict(rgb=small_rgb, depth=files['depth']))
    out = inference_multimodal(model, dict(depth=files['depth'], lidar=small))
    assert out.pred_sem_seg.data.shape == (1, H, W)  # no RGB: depth comes first
    assert 'size of depth' in notice()


def test_errors_name_the_problem(world, tmp_path):
    model, dataset = world
    files = _files(dataset, 0)
    with pytest.raises(ValueError, match=r"unknown modality \['thermal'\].*'rgb', 'depth', "
                                         r"'event', 'lidar'"):
        inference_multimodal(model, dict(files, thermal=files['rgb']))
    with pytest.raises(ValueError, match=r"'depth'.*\(H, W, 3\).*got \(48, 64, 2\)"):
        inference_multimodal(model, dict(rgb=files['rgb'], depth=np.zeros((H, W, 2), np.uint8)))
    with pytest.raises(ValueError, match=r"'lidar'.*got shape \(48, 40, 3\).*\(48, 64, 3\)"):
        inference_multimodal(model, dict(rgb=files['rgb'], lidar=np.zeros((H, 40, 3), np.uint8)))
    missing = tmp_path / 'nope_depth.png'
    with pytest.raises(FileNotFoundError, match=r"'depth'.*nope_depth\.png"):
        inference_multimodal(model, dict(rgb=files['rgb'], depth=str(missing)))
    for nothing in ({}, dict(rgb=None, depth=None)):
        with pytest.raises(ValueError, match=r'no modality given.*rgb'):
            inference_multimodal(model, nothing)
    with pytest.raises(TypeError, match="'rgb'"):
        inference_multimodal(model, dict(rgb=42))


def test_preprocessor_state_is_restored_on_error(world, monkeypatch):
    model, dataset = world
    pre = model.data_preprocessor
    seen = {}

    def boom(data):
        seen.update(missing=pre.missing_modalities, ratio=pre.missing_ratio)
        raise RuntimeError('forward failed')

    monkeypatch.setattr(model, 'test_step', boom)
    with pre.protocol(missing=('lidar', ), ratio=0.5):
        with pytest.raises(RuntimeError, match='forward failed'):
            inference_multimodal(model, dict(rgb=_files(dataset, 0)['rgb']))
        assert seen == dict(missing=('depth', 'event', 'lidar'), ratio=1.0)
        assert (pre.missing_modalities, pre.missing_ratio) == (('lidar', ), 0.5)
        with pytest.raises(ValueError):  # missing everything: refused, state untouched
            with pre.protocol(missing=MODS, ratio=1.0):
                pass
        assert (pre.missing_modalities, pre.missing_ratio) == (('lidar', ), 0.5)
    assert (pre.missing_modalities, pre.missing_ratio) == ((), 1.0)


def test_save_prediction_writes_labels_and_overlays(world, tmp_path):
    model, dataset = world
    files = _files(dataset, 0)
    result = inference_multimodal(model, files)
    pred = result.pred_sem_seg.data[0].numpy()
    palette = np.array(model.dataset_meta['palette'], np.uint8)

    paths = save_prediction(model, result, str(tmp_path / 'out' / 'frame.png'))
    assert paths == dict(label=str(tmp_path / 'out' / 'frame.png'),
                         overlay=str(tmp_path / 'out' / 'frame_overlay.png'))
    label = mmcv.imread(paths['label'], flag='unchanged')
    assert label.dtype == np.uint8 and label.shape == (H, W)
    np.testing.assert_array_equal(label, pred)
    overlay = mmcv.imread(paths['overlay'], channel_order='rgb')
    np.testing.assert_array_equal(overlay, palette[pred])  # no rgb: the palette alone

    paths = save_prediction(model, result, str(tmp_path / 'blend.png'), rgb=files['rgb'],
                            opacity=0.5)
    rgb = mmcv.imread(files['rgb'], channel_order='rgb').astype(np.float64)
    blended = mmcv.imread(paths['overlay'], channel_order='rgb').astype(np.float64)
    expected = rgb * 0.5 + palette[pred] * 0.5
    assert np.abs(blended - expected).max() <= 1.0

    with pytest.raises(ValueError, match='.png'):
        save_prediction(model, result, str(tmp_path / 'frame.jpg'))
    with pytest.raises(ValueError, match='opacity'):
        save_prediction(model, result, str(tmp_path / 'x.png'), opacity=0.0)


def test_init_multimodal_model_meta_and_checkpoint(world, tmp_path):
    model, _ = world
    assert model.dataset_meta['classes'][:2] == ('Building', 'Fence')
    assert len(model.dataset_meta['palette']) == 25
    assert model.dataset_meta['modalities'] == tuple(MODS)
    assert not model.training and isinstance(model.cfg, Config)

    ckpt = tmp_path / 'tiny.pth'
    meta = dict(classes=tuple(f'c{i}' for i in range(25)), palette=[[i, i, i] for i in range(25)])
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=meta)), ckpt)
    data_root = model.cfg.test_dataloader.dataset.data_root
    torch.manual_seed(1)  # a different random init, overwritten by the checkpoint
    loaded = init_multimodal_model(CONFIG, str(ckpt), cfg_options=tiny_options(data_root))
    assert loaded.dataset_meta['classes'][0] == 'c0'
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name

    with pytest.raises(FileNotFoundError, match='nope.py'):
        init_multimodal_model(str(tmp_path / 'nope.py'))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        init_multimodal_model(CONFIG, str(tmp_path / 'nope.pth'))


def test_non_finite_inputs_are_refused(world, tmp_path):
    model, dataset = world
    files = _files(dataset, 0)
    depth = mmcv.imread(files['depth'], flag='unchanged').astype(np.float32)
    depth[0, 0, 0], depth[1, 1, 1] = np.nan, -np.inf
    with pytest.raises(ValueError, match=r"'depth' array holds 2 non-finite values \(1 NaN, "
                                         r'1 Inf as float32\)'):
        inference_multimodal(model, dict(files, depth=depth))
    path = tmp_path / 'depth.npy'
    np.save(path, depth)
    with pytest.raises(ValueError, match=rf"'depth' file {path} holds 2 non-finite"):
        inference_multimodal(model, dict(files, depth=str(path)))
    assert model.data_preprocessor.missing_modalities == ()


def test_inference_uses_the_loader_rules(world, monkeypatch):
    """Reading and stacking go through the loader's public ``load_modalities``."""
    from equiseg_mm.datasets.transforms import LoadMultiModalImageFromFiles
    model, dataset = world
    calls = []
    real = LoadMultiModalImageFromFiles.load_modalities

    def spy(self, sources, sample='', size_from='first', notify_resize=False):
        calls.append((list(sources), size_from, notify_resize))
        return real(self, sources, sample, size_from, notify_resize)

    monkeypatch.setattr(LoadMultiModalImageFromFiles, 'load_modalities', spy)
    files = _files(dataset, 0)
    inference_multimodal(model, dict(rgb=files['rgb'], lidar=files['lidar']))
    assert calls == [(MODS, 'first', True)]


def test_a_checkpoint_of_other_modalities_is_refused_by_every_loading_path(world, tmp_path):
    """A 4-modality checkpoint into a 3-modality config: an error naming both lists from the
    API and from mmengine's loader (load_from, tools/test.py, --resume), never a model with a
    freshly initialised branch; with the opt-in, the matching branches load by name."""
    from mmengine.runner.checkpoint import get_state_dict, load_checkpoint, weights_to_cpu
    model, _ = world
    ckpt = str(tmp_path / 'rgbdel.pth')
    torch.save(dict(state_dict=weights_to_cpu(get_state_dict(model)), meta={}), ckpt)
    data_root = model.cfg.test_dataloader.dataset.data_root
    rgbd = {**tiny_options(data_root), 'model.backbone.modalities': ['rgb', 'depth', 'lidar'],
            'model.backbone.in_channels': [3, 3, 3], 'model.neck.num_modalities': 3,
            'model.data_preprocessor.modalities': ['rgb', 'depth', 'lidar'],
            'model.data_preprocessor.channels': [3, 3, 3]}
    both = r"\['rgb', 'depth', 'event', 'lidar'\].*\['rgb', 'depth', 'lidar'\]"
    with pytest.raises(ValueError, match=both):
        init_multimodal_model(CONFIG, ckpt, cfg_options=rgbd)
    other = init_multimodal_model(CONFIG, cfg_options=rgbd)
    with pytest.raises(ValueError, match=both):
        load_checkpoint(other, ckpt, map_location='cpu', strict=False)
    partial = init_multimodal_model(
        CONFIG, ckpt, cfg_options={**rgbd, 'model.backbone.partial_checkpoint': True})
    for mine, theirs in ((0, 0), (1, 1), (2, 3)):
        for key, value in model.backbone.branches[theirs].state_dict().items():
            assert torch.equal(partial.backbone.branches[mine].state_dict()[key], value)


def test_a_checkpoint_of_another_class_count_is_refused(world, tmp_path):
    """A head trained for 25 classes into a 19-class config: an error naming the tensors, not a
    model with a freshly initialised classifier (mmengine alone only warns)."""
    from mmengine.runner.checkpoint import load_checkpoint
    model, _ = world
    ckpt = str(tmp_path / 'c25.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), ckpt)
    data_root = model.cfg.test_dataloader.dataset.data_root
    c19 = {**tiny_options(data_root), 'model.decode_head.num_classes': 19,
           'model.auxiliary_head.num_classes': 19}
    with pytest.raises(ValueError, match=r'another number of classes.*decode_head\.conv_seg\.'
                                         r'weight: checkpoint \(25, 16, 1, 1\), model '
                                         r'\(19, 16, 1, 1\)'):
        init_multimodal_model(CONFIG, ckpt, cfg_options=c19)
    other = init_multimodal_model(CONFIG, cfg_options=c19)
    with pytest.raises(ValueError, match='another number of classes'):
        load_checkpoint(other, ckpt, map_location='cpu', strict=False)
    fresh = other.decode_head.conv_seg.weight.clone()
    other.backbone.partial_checkpoint = True  # the opt-in: what fits loads, the rest stays
    load_checkpoint(other, ckpt, map_location='cpu', strict=False)
    assert torch.equal(other.decode_head.conv_seg.weight, fresh)
    assert torch.equal(other.backbone.branches[0].layers[0][0].projection.weight,
                       model.backbone.branches[0].layers[0][0].projection.weight)


def test_other_input_channels_through_the_whole_model_name_the_modality_lists(world, tmp_path):
    """The segmentor lets the backbone name both modality lists before its own shape check."""
    model, _ = world
    ckpt = str(tmp_path / 'rgbdel.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), ckpt)
    data_root = model.cfg.test_dataloader.dataset.data_root
    one_channel_depth = {**tiny_options(data_root), 'model.backbone.in_channels': [3, 1, 3, 3],
                         'model.data_preprocessor.channels': [3, 1, 3, 3]}
    with pytest.raises(ValueError, match=r'input channels \[3, 3, 3, 3\], this model has '
                                         r"\['rgb', 'depth', 'event', 'lidar'\] with input "
                                         r'channels \[3, 1, 3, 3\]'):
        init_multimodal_model(CONFIG, ckpt, cfg_options=one_channel_depth)

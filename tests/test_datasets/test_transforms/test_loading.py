"""LoadMultiModalImageFromFiles and LoadMultiModalAnnotations, alone and in mmseg pipelines."""
import numpy as np
import pytest
from mmcv.transforms import Compose
from mmseg.datasets.transforms import LoadAnnotations
from PIL import Image
from multimodal_fixtures import (DELIVER_SAMPLES, MODALITY_IDS, H, W, deliver_label_png,
                                 make_deliver, position_image, write_image)

from equiseg_mm.datasets import DELIVERDataset, MUSESDataset
from equiseg_mm.datasets.transforms import LoadMultiModalAnnotations, LoadMultiModalImageFromFiles

ROWS, COLS = np.mgrid[:H, :W]


def results_for(tmp_path, arrays, label=None, num_classes=25, reduce_zero_label=False):
    """Write ``arrays`` (name -> array or (filename, array)) and return a results dict."""
    paths = {}
    for name, item in arrays.items():
        fname, array = item if isinstance(item, tuple) else (f'{name}.png', item)
        path = str(tmp_path / fname)
        if fname.endswith('.npz'):
            np.savez(path, **array) if isinstance(array, dict) else np.savez(path, array)
        elif fname.endswith('.npy'):
            np.save(path, array)
        else:
            write_image(path, array)
        paths[name] = path
    results = dict(modality_paths=paths, img_path=next(iter(paths.values())), sample_idx=7,
                   seg_fields=[], reduce_zero_label=reduce_zero_label, label_map=None,
                   num_classes=num_classes)
    if label is not None:
        results['seg_map_path'] = write_image(tmp_path / 'label.png', label)
    return results


def test_stacks_in_order_and_keeps_bgr(tmp_path):
    rgb = position_image(H, W, MODALITY_IDS['rgb'])
    depth = position_image(H, W, MODALITY_IDS['depth'])
    res = LoadMultiModalImageFromFiles()(results_for(tmp_path, dict(rgb=rgb, depth=depth)))
    assert res['img'].dtype == np.uint8 and res['img'].shape == (H, W, 6)
    np.testing.assert_array_equal(res['img'][..., :3], rgb)  # as written by cv2: BGR order
    np.testing.assert_array_equal(res['img'][..., 3:], depth)
    assert res['img_shape'] == res['ori_shape'] == (H, W)
    assert res['modalities'] == ['rgb', 'depth'] and res['modality_channels'] == [3, 3]
    res = LoadMultiModalImageFromFiles()(results_for(tmp_path, dict(depth=depth, rgb=rgb)))
    np.testing.assert_array_equal(res['img'][..., :3], depth)  # the dict's order wins
    assert res['modalities'] == ['depth', 'rgb']


def test_one_channel_repeat_and_keep(tmp_path):
    gray = (ROWS * 3 + COLS).astype(np.uint8)
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1), event=gray))
    out = LoadMultiModalImageFromFiles()(dict(res))
    assert out['img'].shape == (H, W, 6) and out['modality_channels'] == [3, 3]
    for c in range(3, 6):
        np.testing.assert_array_equal(out['img'][..., c], gray)
    out = LoadMultiModalImageFromFiles(channels=dict(event=1))(dict(res))
    assert out['img'].shape == (H, W, 4) and out['modality_channels'] == [3, 1]
    np.testing.assert_array_equal(out['img'][..., 3], gray)


def test_three_channel_file_for_one_channel_modality(tmp_path):
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1),
                                     event=position_image(H, W, 2)))
    with pytest.raises(ValueError, match=r"'event' file .*event\.png has 3 channels but "
                       r"channels\['event'\]=1"):
        LoadMultiModalImageFromFiles(channels=dict(event=1))(res)


def test_four_channel_file_keeps_first_three(tmp_path):
    bgra = np.concatenate([position_image(H, W, 5), np.full((H, W, 1), 99, np.uint8)], axis=2)
    res = LoadMultiModalImageFromFiles()(results_for(
        tmp_path, dict(rgb=position_image(H, W, 1), lidar=bgra)))
    assert res['img'].shape == (H, W, 6)
    np.testing.assert_array_equal(res['img'][..., 3:], bgra[..., :3])


def test_sixteen_bit_png_gives_float32(tmp_path):
    depth16 = (ROWS * 2000 + COLS).astype(np.uint16)
    depth16[0, 0] = 65535
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1), depth=depth16))
    out = LoadMultiModalImageFromFiles(channels=dict(depth=1))(res)
    assert out['img'].dtype == np.float32 and out['img'].shape == (H, W, 4)
    np.testing.assert_array_equal(out['img'][..., 3], depth16.astype(np.float32))
    np.testing.assert_array_equal(out['img'][..., :3], position_image(H, W, 1))


def test_to_float32(tmp_path):
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)))
    out = LoadMultiModalImageFromFiles(to_float32=True)(res)
    assert out['img'].dtype == np.float32
    np.testing.assert_array_equal(out['img'], position_image(H, W, 1))


def test_npz_first_array_or_key_and_npy(tmp_path):
    first = np.stack([ROWS * 0.5, COLS * 0.25], axis=2)
    second = np.full((H, W), 3.5)
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1),
                                     lidar=('lidar.npz', dict(a_first=first, b_second=second)),
                                     radar=('radar.npy', (ROWS > 5))))
    out = LoadMultiModalImageFromFiles(channels=dict(lidar=2, radar=1))(dict(res))
    assert out['img'].dtype == np.float32 and out['modality_channels'] == [3, 2, 1]
    np.testing.assert_allclose(out['img'][..., 3:5], first)
    np.testing.assert_array_equal(out['img'][..., 5], (ROWS > 5).astype(np.float32))
    out = LoadMultiModalImageFromFiles(channels=dict(lidar=1, radar=1),
                                       npz_key=dict(lidar='b_second'))(dict(res))
    np.testing.assert_allclose(out['img'][..., 3], second)
    with pytest.raises(ValueError, match=r"sample 7 .*'lidar' array file .*lidar\.npz.*"
                       r"'nope'.*a_first"):
        LoadMultiModalImageFromFiles(npz_key='nope')(dict(res))


def test_smaller_modality_resized_with_nearest_neighbour(tmp_path):
    small = position_image(H // 2, W // 2, MODALITY_IDS['event'])
    small[..., 2] = (np.arange(W // 2)[None, :] * 7 + np.arange(H // 2)[:, None]) % 256
    res = LoadMultiModalImageFromFiles()(results_for(
        tmp_path, dict(rgb=position_image(H, W, 1), event=small)))
    event = res['img'][..., 3:]
    assert event.shape == (H, W, 3)
    np.testing.assert_array_equal(event, small[ROWS // 2, COLS // 2])  # no interpolated values


def test_smaller_modality_non_integer_ratio(tmp_path):
    # 1080x1920 -> e.g. 154x274 rounds; same aspect ratio within a pixel
    res = LoadMultiModalImageFromFiles()(results_for(
        tmp_path, dict(rgb=position_image(54, 96, 1), event=position_image(7, 12, 2))))
    assert res['img'].shape == (54, 96, 6)
    assert set(np.unique(res['img'][..., 3])) <= set(range(7))


@pytest.mark.parametrize('size', [(H * 2, W * 2), (H, W // 2), (H + 1, W)])
def test_irreconcilable_sizes(tmp_path, size):
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1),
                                     event=position_image(*size, 2)))
    with pytest.raises(ValueError) as err:
        LoadMultiModalImageFromFiles()(res)
    msg = str(err.value)
    assert 'sample 7' in msg and res['modality_paths']['event'] in msg
    assert f'{size[0]}x{size[1]}' in msg and f'{H}x{W}' in msg


def test_missing_file(tmp_path):
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)))
    res['modality_paths']['depth'] = str(tmp_path / 'nope' / 'depth.png')
    with pytest.raises(FileNotFoundError, match=r"sample 7 .*'depth' file .*nope/depth\.png"):
        LoadMultiModalImageFromFiles()(res)


@pytest.mark.parametrize('content', [b'', b'not a png at all', b'\x89PNG\r\n\x1a\n' + b'\0' * 20])
def test_corrupt_image(tmp_path, content):
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)))
    bad = tmp_path / 'depth.png'
    bad.write_bytes(content)
    res['modality_paths']['depth'] = str(bad)
    with pytest.raises(ValueError, match=f"cannot decode the 'depth' file {bad}"):
        LoadMultiModalImageFromFiles()(res)


def test_corrupt_npz(tmp_path):
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)))
    bad = tmp_path / 'lidar.npz'
    bad.write_bytes(b'PK\x03\x04 truncated')
    res['modality_paths']['lidar'] = str(bad)
    with pytest.raises(ValueError, match=f"cannot read the 'lidar' array file {bad}"):
        LoadMultiModalImageFromFiles()(res)


def test_missing_modality_paths_key():
    with pytest.raises(KeyError, match='modality_paths'):
        LoadMultiModalImageFromFiles()(dict(img_path='x.png'))


def test_bad_channels_argument():
    with pytest.raises(ValueError, match=r"channels\['depth'\]=0"):
        LoadMultiModalImageFromFiles(channels=dict(depth=0))


# ------------------------------------------------------------------------------ annotations
def test_annotation_takes_channel_zero_of_colour_png(tmp_path):
    raw = ((ROWS + COLS) % 25 + 1).astype(np.uint8)
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)), label=deliver_label_png(raw),
                      reduce_zero_label=True)
    out = LoadMultiModalAnnotations()(res)
    np.testing.assert_array_equal(out['gt_seg_map'], raw - 1)  # R channel, not B (200) or G
    assert out['gt_seg_map'].shape == (H, W) and out['seg_fields'] == ['gt_seg_map']


def test_annotation_single_channel_and_cv2_backend(tmp_path):
    labels = ((ROWS + COLS) % 19).astype(np.uint8)
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)), label=labels,
                      num_classes=19)
    np.testing.assert_array_equal(LoadMultiModalAnnotations()(dict(res, seg_fields=[]))[
        'gt_seg_map'], labels)
    colour = deliver_label_png(labels)
    write_image(res['seg_map_path'], colour)
    out = LoadMultiModalAnnotations(imdecode_backend='cv2')(dict(res, seg_fields=[]))
    np.testing.assert_array_equal(out['gt_seg_map'], labels)


def test_annotation_label_map(tmp_path):
    labels = np.zeros((H, W), np.uint8)
    labels[:, 5:] = 2
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)), label=labels, num_classes=2)
    res['label_map'] = {0: 255, 1: 0, 2: 1}
    gt = LoadMultiModalAnnotations()(res)['gt_seg_map']
    assert gt[0, 0] == 255 and gt[0, 5] == 1


def test_annotation_out_of_range(tmp_path):
    labels = np.zeros((H, W), np.uint8)
    labels[1, 1], labels[2, 2], labels[3, 3] = 5, 9, 255
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)), label=labels, num_classes=5)
    with pytest.raises(ValueError, match=r'sample 7 .*label\.png holds values \[5, 9\].*'
                       r'0\.\.4 or ignore 255'):
        LoadMultiModalAnnotations()(dict(res))
    assert LoadMultiModalAnnotations(validate=False)(dict(res, seg_fields=[]))[
        'gt_seg_map'][2, 2] == 9
    del res['num_classes']  # no class count: nothing to check against
    assert LoadMultiModalAnnotations()(dict(res, seg_fields=[]))['gt_seg_map'][1, 1] == 5


def test_annotation_missing_and_corrupt(tmp_path):
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)))
    res['seg_map_path'] = str(tmp_path / 'none.png')
    with pytest.raises(FileNotFoundError, match=r'sample 7 .*label file .*none\.png'):
        LoadMultiModalAnnotations()(dict(res))
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'garbage')
    for backend in ('pillow', 'cv2'):
        with pytest.raises(ValueError, match=f'cannot decode the label file {bad}'):
            LoadMultiModalAnnotations(imdecode_backend=backend)(dict(res, seg_map_path=str(bad)))


# ------------------------------------------------------------------------------ alignment
def _check_alignment(img, gt, num_modalities=4):
    """Every modality shows the same source pixel, and the label belongs to that pixel."""
    rows, cols = img[..., 0].astype(int), img[..., 1].astype(int)
    for m in range(1, num_modalities):
        np.testing.assert_array_equal(img[..., 3 * m], img[..., 0])
        np.testing.assert_array_equal(img[..., 3 * m + 1], img[..., 1])
    np.testing.assert_array_equal(gt, (rows + cols) % 25)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_alignment_through_mmseg_geometric_transforms(tmp_path, seed):
    root = make_deliver(tmp_path, samples=DELIVER_SAMPLES[:1])
    ds = DELIVERDataset(data_root=root, split='train')
    crop = (20, 28)
    pipeline = Compose([
        dict(type='LoadMultiModalImageFromFiles'),
        dict(type='LoadMultiModalAnnotations'),
        # nearest, so that every output pixel is one source pixel of every modality
        dict(type='RandomResize', scale=(W, H), ratio_range=(1.3, 2.0), keep_ratio=True,
             interpolation='nearest'),
        dict(type='RandomCrop', crop_size=crop),
        dict(type='RandomFlip', prob=1.0, direction='horizontal'),
    ])
    np.random.seed(seed)
    out = pipeline(ds.get_data_info(0))
    img, gt = out['img'], out['gt_seg_map']
    assert img.shape == (*crop, 12) and gt.shape == crop
    _check_alignment(img, gt)
    assert (np.diff(img[0, :, 1].astype(int)) <= 0).all()  # flipped: columns decrease
    assert img[0, 0, 1] > img[0, -1, 1]
    assert out['flip'] is True and out['scale_factor'][0] > 1.29
    # the modality ids survive: nothing was mixed between modalities
    assert [img[0, 0, 3 * m + 2] for m in range(4)] == [MODALITY_IDS[k] for k in
                                                         ('rgb', 'hha', 'event', 'lidar')]


def test_alignment_with_bilinear_resize_and_low_res_event(tmp_path):
    root = make_deliver(tmp_path, samples=DELIVER_SAMPLES[:1], event_size=(H // 2, W // 2))
    ds = DELIVERDataset(data_root=root, split='train')
    loaded = Compose([dict(type='LoadMultiModalImageFromFiles')])(ds.get_data_info(0))
    event = loaded['img'][..., 6:9]
    np.testing.assert_array_equal(event[..., 0], ROWS // 2)  # nearest upsampling of low-res
    np.testing.assert_array_equal(event[..., 1], COLS // 2)
    pipeline = Compose([
        dict(type='LoadMultiModalImageFromFiles'),
        dict(type='LoadMultiModalAnnotations'),
        dict(type='RandomResize', scale=(W, H), ratio_range=(1.5, 1.5), keep_ratio=True),
        dict(type='RandomFlip', prob=1.0, direction='vertical'),
        dict(type='PackSegInputs'),
    ])
    out = pipeline(ds.get_data_info(0))
    inputs = out['inputs'].numpy()
    assert inputs.shape == (12, H * 3 // 2, W * 3 // 2)
    # bilinear: the full-resolution modalities still agree with each other exactly
    for m in (1, 3):
        np.testing.assert_array_equal(inputs[3 * m], inputs[0])
        np.testing.assert_array_equal(inputs[3 * m + 1], inputs[1])
    assert (np.diff(inputs[0, :, 0].astype(int)) <= 0).all()  # vertical flip: rows decrease
    assert out['data_samples'].gt_sem_seg.data.shape[1:] == inputs.shape[1:]


# ------------------------------------------------------------------------------ non-finite data
@pytest.mark.parametrize('fname', ['lidar.npy', 'lidar.npz'])
def test_non_finite_arrays_are_refused(tmp_path, fname):
    lidar = np.stack([ROWS * 0.5, COLS * 0.25], axis=2)
    lidar[1, 2, 0], lidar[3, 4, 1], lidar[5, 6, 0] = np.nan, np.inf, -np.inf
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1), lidar=(fname, lidar)))
    with pytest.raises(ValueError, match=rf"sample 7 .*'lidar' file .*{fname.replace('.', '[.]')} "
                       r'holds 3 non-finite values \(1 NaN, 2 Inf as float32\) of 1920'):
        LoadMultiModalImageFromFiles(channels=dict(lidar=2))(res)


def test_float64_overflowing_float32_is_refused(tmp_path):
    depth = np.full((H, W), 1e300)  # finite in float64, Inf once stacked as float32
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1), depth=('depth.npy', depth)))
    with pytest.raises(ValueError, match=r"'depth' file .*depth\.npy holds 960 non-finite"):
        LoadMultiModalImageFromFiles(channels=dict(depth=1))(res)


def test_non_finite_float_image_is_refused(tmp_path):
    depth = (ROWS * 0.5).astype(np.float32)
    depth[0, 0] = np.nan
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1), depth=('depth.tiff', depth)))
    with pytest.raises(ValueError, match=r"'depth' file .*depth\.tiff holds 1 non-finite values "
                       r'\(1 NaN'):
        LoadMultiModalImageFromFiles(channels=dict(depth=1))(res)


# ------------------------------------------------------------------------------ load_modalities
def test_load_modalities_files_arrays_and_placeholders(tmp_path):
    rgb = position_image(H, W, 1)
    path = write_image(tmp_path / 'rgb.png', rgb)
    loader = LoadMultiModalImageFromFiles(channels=dict(depth=1))
    img, channels = loader.load_modalities(dict(rgb=path, depth=None, event=rgb[..., 0]))
    assert img.dtype == np.uint8 and img.shape == (H, W, 7) and channels == [3, 1, 3]
    np.testing.assert_array_equal(img[..., :3], rgb)
    assert not img[..., 3].any()  # absent: zero placeholder
    for c in range(4, 7):
        np.testing.assert_array_equal(img[..., c], rgb[..., 0])
    # a float modality makes the whole stack float32, placeholders included
    img, _ = loader.load_modalities(dict(rgb=path, depth=None,
                                         event=rgb[..., 0].astype(np.float64)))
    assert img.dtype == np.float32 and not img[..., 3].any()


def test_load_modalities_size_from(tmp_path):
    loader = LoadMultiModalImageFromFiles()
    small, big = position_image(H // 2, W // 2, 1), position_image(H, W, 2)
    with pytest.raises(ValueError, match=r"my frame: modality 'big': got shape \(24, 40, 3\) "
                       r"\(24x40, HxW, from the array\) but the 'small' modality is 12x20"):
        loader.load_modalities(dict(small=small, big=big), 'my frame')
    img, _ = loader.load_modalities(dict(small=small, big=big), size_from='largest')
    assert img.shape == (H, W, 6)
    np.testing.assert_array_equal(img[..., 3:], big)
    np.testing.assert_array_equal(img[..., :3], small[ROWS // 2, COLS // 2])


def test_load_modalities_errors():
    loader = LoadMultiModalImageFromFiles()
    with pytest.raises(ValueError, match=r"my frame: no modality given.*\['rgb', 'depth'\]"):
        loader.load_modalities(dict(rgb=None, depth=None), 'my frame')
    with pytest.raises(TypeError, match=r"my frame: modality 'rgb'.*got int"):
        loader.load_modalities(dict(rgb=3), 'my frame')
    with pytest.raises(ValueError, match=r"my frame: the 'depth' array holds 1 non-finite"):
        loader.load_modalities(dict(depth=np.array([[np.nan, 1.0]])), 'my frame')
    with pytest.raises(ValueError, match='size_from'):
        loader.load_modalities(dict(rgb=np.zeros((2, 2, 3), np.uint8)), size_from='smallest')


def test_transform_refuses_a_none_path(tmp_path):
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)))
    res['modality_paths']['depth'] = None
    with pytest.raises(ValueError, match=r"sample 7 .*no file for the modalities \['depth'\]"):
        LoadMultiModalImageFromFiles()(res)


# ------------------------------------------------------------------------------ label files
def test_annotation_on_unlabelled_data(tmp_path):
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)))  # no seg_map_path
    with pytest.raises(ValueError, match=r'sample 7 .*has no label file.*remove '
                       r'LoadMultiModalAnnotations from the pipeline for unlabelled data'):
        LoadMultiModalAnnotations()(res)


def test_annotation_on_an_unlabelled_dataset(muses_root):
    ds = MUSESDataset(data_root=muses_root, split='val', data_prefix=dict(),
                      modality_suffixes=dict(lidar='_lidar.npz'),
                      pipeline=[dict(type='LoadMultiModalImageFromFiles', channels=dict(lidar=2)),
                                dict(type='LoadMultiModalAnnotations')])
    with pytest.raises(ValueError, match=r'sample 0 \(val/rain/night/REC0004_frame_000004\) has '
                       r'no label file.*remove LoadMultiModalAnnotations'):
        ds[0]


@pytest.mark.parametrize('backend', ['pillow', 'cv2'])
@pytest.mark.parametrize('colour', [False, True])
def test_annotation_refuses_16_bit_labels(tmp_path, backend, colour):
    labels = ((ROWS + COLS) % 19).astype(np.uint16)
    labels[2, 3] = 300  # wraps to 44 in uint8
    label = deliver_label_png(labels.astype(np.uint8)).astype(np.uint16) if colour else labels
    if colour:
        label[..., 2] = labels
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)), label=label, num_classes=19)
    with pytest.raises(ValueError, match=r'sample 7 .*label file .*label\.png is a 16-bit PNG; '
                       r'label maps must be 8-bit'):
        LoadMultiModalAnnotations(imdecode_backend=backend)(res)
    # not only PNGs: any label image that does not decode to uint8
    res['seg_map_path'] = write_image(tmp_path / 'label.tiff', label)
    with pytest.raises(ValueError, match=r'label file .*label\.tiff decodes to uint16 '
                       r'\(values 0\.\.300\); label maps must be 8-bit'):
        LoadMultiModalAnnotations(imdecode_backend='cv2')(res)


def test_annotation_one_bit_png_with_pillow(tmp_path):
    labels = (ROWS > COLS).astype(np.uint8)
    path = tmp_path / 'label1.png'
    Image.fromarray(labels.astype(bool)).save(path)  # mode '1': pillow decodes it to bool
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)), num_classes=2)
    res['seg_map_path'] = str(path)
    out = LoadMultiModalAnnotations()(res)  # (cv2 scales 1-bit files to 0/255 itself)
    assert out['gt_seg_map'].dtype == np.uint8
    np.testing.assert_array_equal(out['gt_seg_map'], labels)


@pytest.mark.parametrize('reduce_zero_label', [False, True])
@pytest.mark.parametrize('label_map', [None, {0: 5, 5: 0, 7: 255, 255: 3, 300: 1}])
def test_annotation_mapping_equals_mmseg(tmp_path, reduce_zero_label, label_map):
    values = np.arange(256, dtype=np.uint8)
    raw = values[(ROWS * W + COLS) % 256]  # every value 0..255
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)), label=raw,
                      reduce_zero_label=reduce_zero_label)
    res['label_map'] = label_map
    expected = LoadAnnotations()(dict(res, seg_fields=[]))['gt_seg_map']
    ours = LoadMultiModalAnnotations(validate=False)(dict(res, seg_fields=[]))['gt_seg_map']
    assert ours.dtype == expected.dtype == np.uint8
    np.testing.assert_array_equal(ours, expected)
    # the colour file: channel 0 (R) is selected, then mapped, as mmseg maps the grey file
    write_image(res['seg_map_path'], deliver_label_png(raw))
    colour = LoadMultiModalAnnotations(validate=False)(dict(res, seg_fields=[]))['gt_seg_map']
    np.testing.assert_array_equal(colour, expected)


def test_annotation_reduce_zero_label_mismatch(tmp_path):
    res = results_for(tmp_path, dict(rgb=position_image(H, W, 1)),
                      label=np.ones((H, W), np.uint8), reduce_zero_label=False)
    with pytest.warns(UserWarning, match='reduce_zero_label'):
        transform = LoadMultiModalAnnotations(reduce_zero_label=True)
    with pytest.raises(ValueError, match=r'dataset sets reduce_zero_label=False but '
                       r'LoadMultiModalAnnotations has reduce_zero_label=True'):
        transform(res)


def test_mixed_bit_depths_within_a_modality_are_an_error(tmp_path):
    """One mean/std cannot normalise 8-bit and 16-bit files of the same modality."""
    loader = LoadMultiModalImageFromFiles(channels=dict(depth=1))
    rgb = position_image(H, W, 1)
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    loader(results_for(tmp_path / 'a', dict(rgb=rgb, depth=(ROWS % 256).astype(np.uint8))))
    deep = results_for(tmp_path / 'b', dict(rgb=rgb, depth=(ROWS * 300).astype(np.uint16)))
    with pytest.raises(ValueError, match=r"sample 7 .*modality 'depth': file .*b/depth.png is "
                                         r'uint16 but the earlier files of this modality were '
                                         r'uint8'):
        loader(deep)
    out = LoadMultiModalImageFromFiles(channels=dict(depth=1))(deep)  # 16-bit throughout: fine
    assert out['img'].dtype == np.float32 and out['img'][..., 3].max() > 255

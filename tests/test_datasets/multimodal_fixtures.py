"""Fixture writers for the dataset and loading tests: tiny files in the real layouts.

Imported by ``conftest.py`` (which puts this folder on ``sys.path``) and by the tests.

Modality images encode the pixel position (channel 0 = row, channel 1 = column, channel 2 = a
per-modality id), and labels encode it too (class = (row + col) % 25), so any misalignment
between modalities or with the label after geometric transforms is detectable.
"""
import os
import os.path as osp

import cv2
import numpy as np

import equiseg_mm  # noqa: F401  (compat fixes + registration before mmseg imports)

H, W = 24, 40  # DeLiVER fixtures: non-square
MUSES_H, MUSES_W = 18, 32  # 16:9 like MUSES' 1920x1080
MODALITY_IDS = dict(rgb=10, depth=20, hha=30, event=40, lidar=50, radar=60, thermal=70)


def write_image(path, array):
    """Write ``array`` with cv2, creating folders (3-channel arrays are stored as BGR)."""
    path = str(path)
    os.makedirs(osp.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, array), path
    return path


def position_image(h, w, modality_id):
    """(h, w, 3) uint8: row, column, modality id."""
    rows, cols = np.mgrid[:h, :w]
    return np.stack([rows, cols, np.full((h, w), modality_id)], axis=2).astype(np.uint8)


def position_labels(h, w, num_classes=25):
    """(h, w) class ids that encode the position."""
    rows, cols = np.mgrid[:h, :w]
    return ((rows + cols) % num_classes).astype(np.uint8)


def deliver_label_png(raw_r):
    """A DeLiVER-style colour label: ``raw_r`` in R (file channel 0), other values in G and B."""
    h, w = raw_r.shape
    bgr = np.empty((h, w, 3), np.uint8)
    bgr[..., 0] = 200  # B: would be out of range if read instead of R
    bgr[..., 1] = 7  # G
    bgr[..., 2] = raw_r
    return bgr


DELIVER_SAMPLES = [
    # condition, split, path below the split folder (sequence/frame), case
    ('cloud', 'train', 'MAP_1/000001', 'clean'),
    ('night', 'train', 'MAP_2_motionblur/000002', 'motionblur'),
    ('fog', 'train', 'MAP_3/000003', 'clean'),
    ('rain', 'val', 'MAP_4_lidarjitter/000004', 'lidarjitter'),
    ('sun', 'val', 'MAP_5/000005', 'clean'),
    ('sun', 'test', 'eventlowres/MAP_6/000006', 'eventlowres'),
]
DELIVER_TOKENS = dict(img='rgb', hha='depth', depth='depth', event='event', lidar='lidar')


def make_deliver(root, samples=DELIVER_SAMPLES, size=(H, W), event_size=None):
    """Write a DeLiVER tree: img, hha, depth, event, lidar and semantic for every sample.

    Returns:
        str: The ``DELIVER`` root.
    """
    root = osp.join(str(root), 'DELIVER')
    h, w = size
    for condition, split, rel, _ in samples:
        for folder, token in DELIVER_TOKENS.items():
            mod_h, mod_w = (event_size or size) if folder == 'event' else size
            modality_id = MODALITY_IDS['rgb' if folder == 'img' else folder]
            write_image(osp.join(root, folder, condition, split, f'{rel}_{token}_front.png'),
                        position_image(mod_h, mod_w, modality_id))
        raw = position_labels(h, w) + 1  # raw 1..25 -> classes 0..24
        write_image(osp.join(root, 'semantic', condition, split, f'{rel}_semantic_front.png'),
                    deliver_label_png(raw))
    return root


MUSES_SAMPLES = [
    # split, weather, time of day, name
    ('train', 'clear', 'day', 'REC0001_frame_000001'),
    ('train', 'fog', 'night', 'REC0002_frame_000002'),
    ('train', 'snow', 'day', 'REC0003_frame_000003'),
    ('val', 'rain', 'night', 'REC0004_frame_000004'),
]


def make_muses(root, samples=MUSES_SAMPLES):
    """Write a MUSES tree: PNG frame and event camera, ``.npz`` lidar, 16-bit PNG radar.

    Returns:
        str: The ``muses`` root.
    """
    root = osp.join(str(root), 'muses')
    h, w = MUSES_H, MUSES_W
    rows, cols = np.mgrid[:h, :w]
    for split, weather, time, name in samples:
        sub = osp.join(split, weather, time, name)
        write_image(osp.join(root, 'frame_camera', sub + '_frame_camera.png'),
                    position_image(h, w, MODALITY_IDS['rgb']))
        write_image(osp.join(root, 'event_camera', sub + '_event_camera.png'),
                    position_image(h // 2, w // 2, MODALITY_IDS['event']))
        lidar = np.stack([rows * 0.5, cols * 0.25], axis=2).astype(np.float64)
        path = osp.join(root, 'lidar', sub + '_lidar.npz')
        os.makedirs(osp.dirname(path), exist_ok=True)
        np.savez(path, projected=lidar, unused=np.zeros(3))
        write_image(osp.join(root, 'radar', sub + '_radar.png'),
                    (rows * 1000 + cols).astype(np.uint16))
        labels = (rows + cols) % 19
        labels[0, 0] = 255
        write_image(osp.join(root, 'gt_semantic', sub + '_gt_labelTrainIds.png'),
                    labels.astype(np.uint8))
    return root

# EQUISeg-B0 on your own RGB-D data: one folder per modality, depth as a 1-channel (8- or
# 16-bit) PNG. The complete recipe of docs/en/user_guides/datasets.md ("Your own data"): copy
# this file, set data_root, classes and the depth statistics, and train with tools/train.py.
#
#   data/my_rgbd/rgb/{train,val}/<name>.png      colour, 8-bit
#   data/my_rgbd/depth/{train,val}/<name>.png    1 channel, 8- or 16-bit (e.g. millimetres)
#   data/my_rgbd/labels/{train,val}/<name>.png   class ids 0..len(classes)-1, 255 = ignore
_base_ = [
    '../_base_/models/equiseg_mit-b0.py', '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k.py'
]
data_root = 'data/my_rgbd'
classes = ('background', 'person', 'car')  # one name per class id of the label PNGs
modalities = ['rgb', 'depth']  # stacking order; the first one's folder is scanned for samples
modality_channels = [3, 1]  # depth keeps its single channel (else it is repeated to 3)
crop_size = (512, 512)

# --- data ------------------------------------------------------------------------------------
dataset_type = 'MultiModalSegDataset'
# PackSegInputs keeps these keys in each sample's metainfo; `modalities` lets the data
# preprocessor check that the dataset and the model stack the same modalities in the same order.
meta_keys = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
             'flip', 'flip_direction', 'reduce_zero_label', 'modalities')
load_modalities = dict(type='LoadMultiModalImageFromFiles', channels=dict(depth=1))
train_pipeline = [
    load_modalities,
    dict(type='LoadMultiModalAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiModalPhotoMetricDistortion'),  # colour jitter of the RGB channels only
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    load_modalities,
    dict(type='LoadMultiModalAnnotations'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]

train_dataloader = dict(
    batch_size=8, num_workers=4, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type, data_root=data_root, modalities=modalities,
        modality_dirs=dict(rgb='rgb/train', depth='depth/train'),
        modality_suffixes=dict(rgb='.png', depth='.png'),
        data_prefix=dict(seg_map_path='labels/train'), seg_map_suffix='.png',
        metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, modalities=modalities,
        modality_dirs=dict(rgb='rgb/val', depth='depth/val'),
        modality_suffixes=dict(rgb='.png', depth='.png'),
        data_prefix=dict(seg_map_path='labels/val'), seg_map_suffix='.png',
        metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='ModalityBalanceMetric')
test_evaluator = val_evaluator

# --- model -----------------------------------------------------------------------------------
model = dict(
    data_preprocessor=dict(
        modalities=modalities,
        channels=modality_channels,
        # Per-modality statistics in the files' own units (nothing is rescaled on loading).
        # RGB: ImageNet's. Depth: placeholders for millimetres spread over 0-10 m; put the
        # mean/std of your depth files here (docs/en/user_guides/datasets.md shows how).
        mean=dict(rgb=[123.675, 116.28, 103.53], depth=[5000.0]),
        std=dict(rgb=[58.395, 57.12, 57.375], depth=[2887.0]),
        size=crop_size),
    backbone=dict(
        modalities=modalities,
        in_channels=modality_channels,
        # ImageNet weights for every branch (recommended; the official mit_b0.pth loads as is,
        # and the 1-channel depth branch gets the mean of its RGB input kernel):
        # init_cfg=dict(type='Pretrained', checkpoint='pretrain/mit_b0.pth'),
    ),
    neck=dict(num_modalities=len(modalities)),
    decode_head=dict(num_classes=len(classes)),
    auxiliary_head=dict(num_classes=len(classes)))

# --- schedule --------------------------------------------------------------------------------
max_iters = 20000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=2000)
# tools/test.py evaluates every modality subset in one pass (robustness report in the work dir)
test_cfg = dict(type='MissingModalityTestLoop')
default_hooks = dict(checkpoint=dict(interval=2000, max_keep_ckpts=3))

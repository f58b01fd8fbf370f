# The embedded synthetic dataset (DeLiVER layout), written by tools/make_synthetic_dataset.py.
_base_ = './deliver.py'
data_root = 'data/synthetic_deliver'
crop_size = (96, 96)
train_pipeline = [
    dict(type='LoadMultiModalImageFromFiles'),
    dict(type='LoadMultiModalAnnotations'),
    dict(type='RandomResize', scale=(128, 96), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiModalPhotoMetricDistortion'),
    dict(type='PackSegInputs', meta_keys={{_base_.meta_keys}}),
]
train_dataloader = dict(
    batch_size=8, num_workers=2,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=8, num_workers=1, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

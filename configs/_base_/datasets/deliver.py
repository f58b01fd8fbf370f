# DeLiVER (CMNeXt, CVPR 2023), RGB-D-E-L, 1024x1024 crops: the reference recipe.
# Leaf configs set `modalities` once and pass it to every dataset, as the model does.
# Layout: data/DELIVER/{img,hha,depth,event,lidar,semantic}/<condition>/<split>/<seq>/<frame>_<m>_front.png
dataset_type = 'DELIVERDataset'
data_root = 'data/DELIVER'
crop_size = (1024, 1024)
meta_keys = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
             'flip', 'flip_direction', 'reduce_zero_label', 'modalities', 'condition', 'case')
train_pipeline = [
    dict(type='LoadMultiModalImageFromFiles'),
    dict(type='LoadMultiModalAnnotations'),
    dict(type='RandomResize', scale=(1042, 1042), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiModalPhotoMetricDistortion'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadMultiModalImageFromFiles'),
    dict(type='LoadMultiModalAnnotations'),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train',
                 modalities=['rgb', 'depth', 'event', 'lidar'],
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='val',
                 modalities=['rgb', 'depth', 'event', 'lidar'],
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='ModalityBalanceMetric')
test_evaluator = val_evaluator

# EQUISeg-B0 on the embedded synthetic DeLiVER-layout data (RGB-D-E-L), CPU-friendly: 96x96 crops,
# 1 process x 8 images, 1k iterations from scratch. This is the README's main job.
_base_ = [
    '../_base_/models/equiseg_mit-b0.py', '../_base_/datasets/synthetic.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_synthetic.py'
]
modalities = ['rgb', 'depth', 'event', 'lidar']
modality_channels = [3, 3, 3, 3]
crop_size = (96, 96)
model = dict(
    data_preprocessor=dict(modalities=modalities, channels=modality_channels, size=crop_size),
    backbone=dict(modalities=modalities, in_channels=modality_channels),
    neck=dict(num_modalities=len(modalities)),
    decode_head=dict(num_classes=25, channels=128),
    auxiliary_head=dict(num_classes=25))
train_dataloader = dict(dataset=dict(modalities=modalities))
val_dataloader = dict(dataset=dict(modalities=modalities))
test_dataloader = dict(dataset=dict(modalities=modalities, split='test'))
test_cfg = dict(type='MissingModalityTestLoop')

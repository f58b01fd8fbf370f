# EQUISeg, MiT-B0 branches, DeLiVER RGB-Depth-Event-LiDAR, 1024x1024 crops, 8 GPUs x 2 images,
# 160k iterations: the reference recipe (AdamW 6e-5, wd 0.01, warm-up + poly).
# The paper's training: its CMTB, the SGM, no modality dropout (what each costs and buys on
# the two synthetic tasks: docs/en/benchmarks.md#defaults-on-two-tasks-cpu). For sensors that
# stay dead for long stretches: model.data_preprocessor.modality_dropout=0.15 (equiseg-md0.15_*).
_base_ = [
    '../_base_/models/equiseg_mit-b0.py', '../_base_/datasets/deliver.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
# Modalities are named once here and flow to dataset, preprocessor, backbone and neck.
modalities = ['rgb', 'depth', 'event', 'lidar']
modality_channels = [3, 3, 3, 3]
crop_size = (1024, 1024)
checkpoint = 'pretrain/mit_b0.pth'  # ImageNet MiT-B0 (official mit_b0.pth or mmseg format)
model = dict(
    data_preprocessor=dict(modalities=modalities, channels=modality_channels, size=crop_size),
    backbone=dict(modalities=modalities, in_channels=modality_channels,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(num_modalities=len(modalities)),
    decode_head=dict(num_classes=25),
    auxiliary_head=dict(num_classes=25),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(768, 768)))
train_dataloader = dict(dataset=dict(modalities=modalities))
val_dataloader = dict(dataset=dict(modalities=modalities))
test_dataloader = val_dataloader
# tools/test.py evaluates the full set and all 15 modality subsets in one pass over the data.
test_cfg = dict(type='MissingModalityTestLoop')

# EQUISeg, MiT-B0 branches, MUSES frame camera + event camera + lidar (projected), 19 classes.
# The paper's training: its CMTB, the SGM, no modality dropout (what each costs and buys on
# the two synthetic tasks: docs/en/benchmarks.md#defaults-on-two-tasks-cpu). For sensors that
# stay dead for long stretches: model.data_preprocessor.modality_dropout=0.15 (equiseg-md0.15_*).
_base_ = [
    '../_base_/models/equiseg_mit-b0.py', '../_base_/datasets/muses.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
modalities = ['rgb', 'event', 'lidar']
modality_channels = [3, 3, 3]
crop_size = (1024, 1024)
checkpoint = 'pretrain/mit_b0.pth'
model = dict(
    data_preprocessor=dict(modalities=modalities, channels=modality_channels, size=crop_size),
    backbone=dict(modalities=modalities, in_channels=modality_channels,
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(num_modalities=len(modalities)),
    decode_head=dict(num_classes=19),
    auxiliary_head=dict(num_classes=19),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(768, 768)))
train_dataloader = dict(dataset=dict(modalities=modalities))
val_dataloader = dict(dataset=dict(modalities=modalities))
test_dataloader = val_dataloader
test_cfg = dict(type='MissingModalityTestLoop')

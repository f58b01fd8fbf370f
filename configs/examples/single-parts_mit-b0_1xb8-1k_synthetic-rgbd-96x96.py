# The plugin's parts in a plain mmseg config: mmseg's own EncoderDecoder with a multimodal
# backbone, neck, auxiliary head, data preprocessor, metric and test loop from equiseg_mm.
# Complete and runnable as written (on the synthetic data of `make demo`):
#   .venv/bin/python tools/train.py configs/examples/single-parts_mit-b0_1xb8-1k_synthetic-rgbd-96x96.py
# Data, pipelines and schedule come from this repository's _base_ files; the model is spelled
# out part by part (docs/en/user_guides/train_test.md, "Using single parts").
_base_ = [
    '../_base_/datasets/synthetic.py', '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_synthetic.py'
]
# default_runtime.py holds these two lines; a config of your own needs them:
default_scope = 'mmseg'
custom_imports = dict(imports=['equiseg_mm'], allow_failed_imports=False)

modalities = ['rgb', 'depth']  # named once; dataset, preprocessor, backbone and neck follow
num_classes = 25
crop_size = (96, 96)
widths = [32, 64, 160, 256]  # MiT-B0's stage widths
model = dict(
    type='EncoderDecoder',  # mmseg's; 'MultiModalEncoderDecoder' + fast_path=True is faster
    data_preprocessor=dict(
        type='MultiModalSegDataPreProcessor', modalities=modalities, bgr_to_rgb=True,
        size=crop_size, modality_dropout=0.2),  # drop each modality with p = 0.2 in training
    backbone=dict(
        type='MultiModalMiT', modalities=modalities, embed_dims=32, num_layers=[2, 2, 2, 2],
        num_heads=[1, 2, 5, 8]),
    neck=dict(type='CMTBNeck', in_channels=widths, num_heads=[1, 2, 5, 8],
              num_modalities=len(modalities)),
    decode_head=dict(
        type='SegformerHead', in_channels=widths, in_index=[0, 1, 2, 3], channels=128,
        num_classes=num_classes, norm_cfg=dict(type='BN', requires_grad=True),
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    # reads the neck's per-modality stacks (its last 4 outputs); delete it to drop the SGM
    auxiliary_head=dict(type='SGMHead', in_channels=widths, num_classes=num_classes),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))  # what validation and testing run; required
train_dataloader = dict(dataset=dict(modalities=modalities))
val_dataloader = dict(dataset=dict(modalities=modalities))
test_dataloader = dict(dataset=dict(modalities=modalities, split='test'))
val_evaluator = dict(type='ModalityBalanceMetric')  # mIoU; with the loop below, per subset too
test_evaluator = val_evaluator
test_cfg = dict(type='MissingModalityTestLoop')  # every modality subset in one pass

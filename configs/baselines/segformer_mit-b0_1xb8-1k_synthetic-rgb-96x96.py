# SegFormer-B0 on the RGB of the embedded synthetic DeLiVER-layout data, 96x96 crops: mmseg's
# MixVisionTransformer and SegformerHead with mmseg's segformer_mit-b0 settings, 25 classes and the
# 256-channel head of the DeLiVER configs. The single-modality reference of
# tools/analysis_tools/benchmark.py: the fast path is on, as in the EQUISeg configs
# (`--cfg-options model.fast_path=False` computes as mmseg's own modules).
_base_ = './earlyfusion_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py'
modalities = ['rgb']
modality_channels = [3]
model = dict(
    fast_path=True,
    data_preprocessor=dict(modalities=modalities, channels=modality_channels),
    backbone=dict(in_channels=3),
    decode_head=dict(channels=256))
train_dataloader = dict(dataset=dict(modalities=modalities))
val_dataloader = dict(dataset=dict(modalities=modalities))
test_dataloader = dict(dataset=dict(modalities=modalities))

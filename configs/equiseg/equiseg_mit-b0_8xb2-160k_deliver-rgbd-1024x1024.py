# Any modality subset is a config change: EQUISeg-B0 on DeLiVER RGB + Depth only.
_base_ = './equiseg_mit-b0_8xb2-160k_deliver-rgbdel-1024x1024.py'
modalities = ['rgb', 'depth']
modality_channels = [3, 3]
model = dict(
    data_preprocessor=dict(modalities=modalities, channels=modality_channels),
    backbone=dict(modalities=modalities, in_channels=modality_channels),
    neck=dict(num_modalities=len(modalities)))
train_dataloader = dict(dataset=dict(modalities=modalities))
val_dataloader = dict(dataset=dict(modalities=modalities))
test_dataloader = val_dataloader

# EQUISeg with mmpretrain ConvNeXt-V2-atto branches (3.4M parameters each) on the synthetic
# DeLiVER-layout data (RGB-D-E-L), 96x96 crops: the MiT-B0 synthetic job with another branch.
# ConvNeXt downsamples 4x, then 2x per stage (32x in all), like MiT, so the neck's spatial
# reductions stay; its widths are 40, 80, 160, 320 (the neck's num_heads 1, 2, 5, 8 divide them).
_base_ = './equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py'
modalities = ['rgb', 'depth', 'event', 'lidar']
modality_channels = [3, 3, 3, 3]
widths = [40, 80, 160, 320]
# ImageNet-1k weights of one mmpretrain ConvNeXt-V2-atto classifier, loaded into every branch
# ('backbone.' keys kept, 'head.' keys dropped, the first convolution adapted for a modality
# with other than 3 channels; norm0-norm2 are not in a classifier checkpoint and stay initialised).
# Uncomment the init_cfg below to use them:
checkpoint = ('https://download.openmmlab.com/mmclassification/v0/convnext-v2/'
              'convnext-v2-atto_fcmae-pre_3rdparty_in1k_20230104-23765f83.pth')
model = dict(
    backbone=dict(
        _delete_=True,
        type='MultiModalMiT',
        modalities=modalities,
        in_channels=modality_channels,
        branch=dict(
            type='mmpretrain.ConvNeXt',  # mmpretrain's registry, imported when built
            arch='atto',
            use_grn=True,  # ConvNeXt-V2: global response normalisation, no layer scale
            layer_scale_init_value=0.,
            out_indices=(0, 1, 2, 3),  # all four stages ...
            gap_before_final_norm=False,  # ... as (B, C, H, W) maps, not pooled vectors
            drop_path_rate=0.1),
        # init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
    ),
    neck=dict(in_channels=widths),
    decode_head=dict(in_channels=widths),
    auxiliary_head=dict(in_channels=widths))

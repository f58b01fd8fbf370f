# EQUISeg with mmpretrain Swin-T branches (27.5M parameters each) on the synthetic
# DeLiVER-layout data (RGB-D-E-L), 96x96 crops: the MiT-B0 synthetic job with another branch.
# Swin's stages have strides 4, 8, 16, 32 like MiT, so the neck's spatial reductions stay; its
# widths are 96, 192, 384, 768 and the neck gets Swin's heads (32 channels per head).
# Window 7 (that of the ImageNet weights): a 96x96 crop gives 24, 12, 6 and 3 pixel maps, so the
# last two are smaller than a window; pad_small_map=True zero-pads them to one window instead of
# failing (as mmpretrain pads any map to a multiple of 7; the zero tokens are not masked out).
_base_ = './equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py'
modalities = ['rgb', 'depth', 'event', 'lidar']
modality_channels = [3, 3, 3, 3]
widths = [96, 192, 384, 768]
# ImageNet-1k weights of one mmpretrain Swin-T classifier, loaded into every branch
# ('backbone.' keys kept, 'head.' keys dropped, the patch embedding adapted for a modality with
# other than 3 channels; norm0-norm2 are not in a classifier checkpoint and stay initialised).
# Uncomment the init_cfg below to use them:
checkpoint = ('https://download.openmmlab.com/mmclassification/v0/swin-transformer/'
              'swin_tiny_224_b16x64_300e_imagenet_20210616_090925-66df6be6.pth')
model = dict(
    backbone=dict(
        _delete_=True,
        type='MultiModalMiT',
        modalities=modalities,
        in_channels=modality_channels,
        branch=dict(
            type='mmpretrain.SwinTransformer',  # mmpretrain's registry, imported when built
            arch='tiny',
            window_size=7,
            out_indices=(0, 1, 2, 3),  # (B, C, H, W) maps of all four stages
            pad_small_map=True,  # stage maps smaller than the window (see above)
            drop_path_rate=0.2),
        # init_cfg=dict(type='Pretrained', checkpoint=checkpoint),
    ),
    neck=dict(in_channels=widths, num_heads=[3, 6, 12, 24]),
    decode_head=dict(in_channels=widths),
    auxiliary_head=dict(in_channels=widths))

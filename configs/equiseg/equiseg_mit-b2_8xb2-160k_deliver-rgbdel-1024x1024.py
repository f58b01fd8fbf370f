# EQUISeg, MiT-B2 branches (the paper's likely setting), DeLiVER RGB-D-E-L, 1024x1024.
_base_ = './equiseg_mit-b0_8xb2-160k_deliver-rgbdel-1024x1024.py'
checkpoint = 'pretrain/mit_b2.pth'
model = dict(
    backbone=dict(embed_dims=64, num_layers=[3, 4, 6, 3],
                  init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(in_channels=[64, 128, 320, 512], channels=768),
    auxiliary_head=dict(in_channels=[64, 128, 320, 512]))

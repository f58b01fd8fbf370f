# EQUISeg with MiT-B0 branches: MultiModalMiT (one equal branch per modality) -> CMTBNeck (one
# Cross-Modal Transformer Block per stage, every modality primary in turn, "Add" fusion) ->
# mmseg's SegFormer all-MLP head on the 4 fused maps, plus the training-only SGMHead on the
# neck's per-modality stacks (the neck's last 4 outputs in training, None in eval mode).
# `auxiliary_head=None` alone drops the SGM. Leaf configs that change `modalities` redefine the
# model fields using it.
modalities = ['rgb', 'depth', 'event', 'lidar']
modality_channels = [3, 3, 3, 3]
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='MultiModalEncoderDecoder',
    # the speed-ups of equiseg_mm/models/utils/fast_path.py: same parameters and outputs
    # (up to float rounding); False computes as the backbone, neck and heads are written
    fast_path=True,
    data_preprocessor=dict(
        type='MultiModalSegDataPreProcessor',
        modalities=modalities,
        channels=modality_channels,
        bgr_to_rgb=True,  # cv2 decodes every 3-channel file as BGR: restore the files' order
        pad_val=0,
        seg_pad_val=255,
        size=None),
    pretrained=None,
    backbone=dict(
        type='MultiModalMiT',
        modalities=modalities,
        in_channels=modality_channels,
        embed_dims=32,
        num_stages=4,
        num_layers=[2, 2, 2, 2],
        num_heads=[1, 2, 5, 8],
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 2],
        sr_ratios=[8, 4, 2, 1],
        out_indices=(0, 1, 2, 3),
        mlp_ratio=4,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        # ImageNet weights for every branch (official mit_b0.pth or mmseg-converted):
        # init_cfg=dict(type='Pretrained', checkpoint='pretrain/mit_b0.pth'),
    ),
    neck=dict(
        type='CMTBNeck',
        in_channels=[32, 64, 160, 256],
        num_heads=[1, 2, 5, 8],
        sr_ratios=[8, 4, 2, 1],
        pool_sizes=(3, 7, 11),
        num_modalities=len(modalities),  # builds no unused cross-modal layers when N = 1
        # The shipped variant of the paper's CMTB (docs/en/architecture.md): one auxiliary
        # summary per sample shared by all primaries, cross-attention keys 2x coarser per axis
        # than the self-attention's, and no self-attention step at the two high-resolution
        # stages. The paper's block: the `equiseg-paperneck_*` configs
        # (aux_summary='per_primary', cross_sr_ratios=None, self_attn=True).
        aux_summary='shared',
        cross_sr_ratios=[16, 8, 4, 2],
        self_attn=[False, False, True, True]),
    decode_head=dict(
        type='SegformerHead',
        in_channels=[32, 64, 160, 256],
        in_index=[0, 1, 2, 3],
        channels=256,
        dropout_ratio=0.1,
        num_classes=25,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='SGMHead',
        in_channels=[32, 64, 160, 256],  # reads the neck's last 4 outputs: the stacks
        num_classes=25,
        temperature=0.1,
        loss_weight=1.0,
        pairing='derangement',
        seed=None),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

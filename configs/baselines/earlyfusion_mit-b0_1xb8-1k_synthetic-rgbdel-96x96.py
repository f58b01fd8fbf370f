# Baseline on the synthetic data: early fusion. One MiT-B0 over the 12 stacked RGB-D-E-L channels
# (mmseg's MixVisionTransformer and SegformerHead, no neck, no SGM), with EQUISeg's data pipeline,
# data preprocessor (per-modality normalisation, missing modalities zeroed) and robustness loop:
# the cheap standard way to use several sensors, to read EQUISeg's numbers against.
_base_ = '../equiseg/equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py'
model = dict(
    fast_path=False,  # mmseg's own computation, as the published baseline
    backbone=dict(
        _delete_=True,
        type='MixVisionTransformer',
        in_channels=12,  # sum(modality_channels)
        embed_dims=32,
        num_stages=4,
        num_layers=[2, 2, 2, 2],
        num_heads=[1, 2, 5, 8],
        patch_sizes=[7, 3, 3, 3],
        sr_ratios=[8, 4, 2, 1],
        out_indices=(0, 1, 2, 3),
        mlp_ratio=4,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1),
    neck=None,
    auxiliary_head=None)

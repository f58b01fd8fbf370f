# The main job with the paper's CMTB (per-primary auxiliary summaries, cross-attention keys
# reduced as the self-attention's, self-attention on every stage): the reference for the faster
# default neck.
_base_ = './equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py'
model = dict(neck=dict(aux_summary='per_primary', cross_sr_ratios=None, self_attn=True))

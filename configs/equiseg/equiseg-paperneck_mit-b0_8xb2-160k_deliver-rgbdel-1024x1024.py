# EQUISeg-B0 with the paper's CMTB: every primary cross-attends to its own summary of the other
# N - 1 modalities, with keys reduced as in the self-attention, after a self-attention step on
# every stage (the shipped default is a faster variant; docs/en/architecture.md, docs/en/benchmarks.md).
_base_ = './equiseg_mit-b0_8xb2-160k_deliver-rgbdel-1024x1024.py'
model = dict(neck=dict(aux_summary='per_primary', cross_sr_ratios=None, self_attn=True))

# Ablation on the synthetic data: EQUISeg-B0 without the SGM auxiliary head.
_base_ = './equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py'
model = dict(auxiliary_head=None)

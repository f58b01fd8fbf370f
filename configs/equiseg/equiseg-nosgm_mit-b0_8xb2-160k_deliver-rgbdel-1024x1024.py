# Ablation: EQUISeg-B0 without the SGM auxiliary head (no teacher-student prototype guidance).
_base_ = './equiseg_mit-b0_8xb2-160k_deliver-rgbdel-1024x1024.py'
model = dict(auxiliary_head=None)

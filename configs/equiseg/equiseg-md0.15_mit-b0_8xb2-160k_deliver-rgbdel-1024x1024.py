# The recipe for dead sensors on DeLiVER: the reference recipe trained with modality dropout
# 0.15 (each sample drops each modality with p = 0.15; never all of them). Use it when a sensor
# may stay dead for long stretches: on both synthetic tasks dropout 0.15 raises the mIoU of each
# modality alone and evens the modalities out, at a cost in full-modality mIoU
# (docs/en/benchmarks.md#defaults-on-two-tasks-cpu). It is not measured on DeLiVER here; the
# plain config keeps the paper's training (no dropout).
_base_ = './equiseg_mit-b0_8xb2-160k_deliver-rgbdel-1024x1024.py'
model = dict(data_preprocessor=dict(modality_dropout=0.15))

# The recipe for dead sensors on the synthetic data: the main job trained with modality dropout
# 0.15 (each sample drops each modality with p = 0.15; never all of them). On both synthetic
# tasks it raises the mIoU of each modality alone and evens the modalities out, and it costs
# full-modality mIoU (docs/en/benchmarks.md#defaults-on-two-tasks-cpu, with the figures).
_base_ = './equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py'
model = dict(data_preprocessor=dict(modality_dropout=0.15))

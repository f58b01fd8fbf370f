# Runtime shared by every equiseg-mm config (mmseg's default runtime plus the plugin import).
default_scope = 'mmseg'
custom_imports = dict(imports=['equiseg_mm'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # 'nccl' on GPUs; tools/train.py switches to 'gloo' when CUDA is unavailable.
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
# diff_rank_seed: each rank draws its own augmentation and modality-dropout randomness
randomness = dict(seed=0, diff_rank_seed=True)
# FiniteLossHook: stop at the first NaN/Inf loss, before a broken checkpoint is saved.
# RNGStateHook: checkpoints carry every random state, so a resumed run ends where the
# uninterrupted run ends (docs/en/user_guides/reproducibility.md). Both in equiseg_mm/engine.
# ClassOrderHook: a checkpoint trained on other classes (number, names or order) is an error.
custom_hooks = [dict(type='FiniteLossHook'), dict(type='RNGStateHook'),
                dict(type='ClassOrderHook')]

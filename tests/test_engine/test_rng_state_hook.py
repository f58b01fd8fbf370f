"""RNGStateHook: N iterations straight and N/2 + resume + N/2 end with bit-identical weights.

The runs train the README's main config, shrunk (8-channel MiT stages, 32x32 crops of 48x64
synthetic frames), with everything random switched on: drop path, decode-head dropout, SGM
pairings from a seeded private generator, modality dropout, photometric augmentation, a
validation at the checkpoint iteration. Each equivalence test also resumes once without the hook
and checks that the weights then differ, so the tests would catch the hook doing nothing.
"""
import logging
import os
import os.path as osp
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import equiseg_mm  # noqa: F401,I001  (first: registration)
from _runner import prepare_config, runner_from_config  # tools/_runner.py (tools/ on sys.path)
from mmseg.registry import HOOKS

from _synthetic_deliver import make_synthetic_deliver
from equiseg_mm.engine import RNGStateHook
from equiseg_mm.engine.rng_state_hook import CHECKPOINT_KEY, _capture_rng_state
from equiseg_mm.models.heads import SGMHead
from equiseg_mm.utils import load_checkpoint_file

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'equiseg', 'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
DIMS, HEADS = [8, 8, 8, 8], [1, 1, 1, 1]
ITERS = 6  # straight: 6; resumed: 3 + resume from iter_3.pth + 3


@pytest.fixture(scope='module', autouse=True)
def _quick_runner():
    """One torch thread (as the tool tests' subprocesses; several threads on a loaded 2-core
    machine made the runs 5x slower), and skip the two slow parts of building a Runner that
    touch no random state: formatting the config with yapf (for the log, the dumped config and
    every checkpoint's meta; about 0.9 s per call here) and collecting the environment
    (compilers, git; about 2.5 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr('mmengine.config.config.FormatCode', lambda text, **kwargs: (text, None))
            mp.setattr('mmengine.runner.runner.collect_env', lambda: {})
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('rng_data') / 'synthetic_deliver'
    make_synthetic_deliver(str(root), num_train=8, num_val=2, num_test=0, size=(48, 64))
    return str(root)


def _options(data_root, num_workers, **extra):
    """The tiny main config with every source of randomness on."""
    pipeline = 'train_dataloader.dataset.pipeline'
    options = {
        'model.backbone.embed_dims': 8, 'model.backbone.num_layers': [1, 1, 1, 1],
        'model.backbone.num_heads': HEADS, 'model.neck.in_channels': DIMS,
        'model.neck.num_heads': HEADS, 'model.decode_head.in_channels': DIMS,
        'model.decode_head.channels': 16, 'model.auxiliary_head.in_channels': DIMS,
        'model.auxiliary_head.seed': 5, 'model.data_preprocessor.size': (32, 32),
        'model.data_preprocessor.modality_dropout': 0.5,
        # the synthetic pipeline: load, load labels, resize, crop, flip, photometric, pack
        f'{pipeline}.2.scale': (64, 48), f'{pipeline}.3.crop_size': (32, 32),
        'train_dataloader.dataset.data_root': data_root, 'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': num_workers,
        'train_dataloader.persistent_workers': num_workers > 0,
        'val_dataloader.dataset.data_root': data_root, 'val_dataloader.batch_size': 2,
        'val_dataloader.num_workers': 0, 'val_dataloader.persistent_workers': False,
        'train_cfg.max_iters': ITERS, 'train_cfg.val_interval': ITERS // 2,
        'default_hooks.checkpoint.interval': ITERS // 2,
        'default_hooks.checkpoint.max_keep_ckpts': -1,
        'default_hooks.visualization.draw': False, 'randomness.seed': 0,
    }
    options.update(extra)
    return options


def _train(work_dir, options, launcher='none', resume_from=None, hook=True):
    """One ``tools/train.py`` run, in this process; returns the final checkpoint's path."""
    cfg = prepare_config(CONFIG, str(work_dir), options, launcher=launcher,
                         resume=resume_from is not None)
    if resume_from is not None:
        cfg.load_from = str(resume_from)
    if not hook:
        cfg.custom_hooks = [h for h in cfg.custom_hooks if h['type'] != 'RNGStateHook']
    cfg.experiment_name = f'rng_{osp.basename(str(work_dir))}_{os.getpid()}'
    runner = runner_from_config(cfg)
    runner.train()
    # stop the persistent dataloader workers now: left to the garbage collector, each waits
    # out torch's 5 s join timeout
    loader_iter = getattr(runner.train_loop.dataloader_iterator, '_iterator', None)
    if hasattr(loader_iter, '_shutdown_workers'):
        loader_iter._shutdown_workers()
    return osp.join(str(work_dir), f'iter_{ITERS}.pth')


def _state_dict(path):
    # the project's weights_only loader: the random states must not need more
    return load_checkpoint_file(path, map_location='cpu')['state_dict']


def _differing(a, b):
    assert list(a) == list(b)
    return [k for k in a if not torch.equal(a[k], b[k])]


def _straight_and_resumed(root, options, launcher='none', unhooked=False):
    """Train ITERS iterations straight, then resume its halfway checkpoint in a fresh work dir
    (and, with ``unhooked``, once more without the hook); the final checkpoints' paths."""
    paths = [_train(root / 'straight', options, launcher)]
    half = root / 'straight' / f'iter_{ITERS // 2}.pth'
    paths.append(_train(root / 'resumed', options, launcher, resume_from=half))
    if unhooked:
        paths.append(_train(root / 'unhooked', options, launcher, resume_from=half, hook=False))
    return paths


def test_resume_ends_with_the_straight_runs_weights(tmp_path, data_root):
    """One process, no dataloader workers: the main process draws the augmentations too, which
    the replay repeats and the restore then puts where the straight run had them."""
    straight, resumed, unhooked = _straight_and_resumed(tmp_path, _options(data_root, 0),
                                                        unhooked=True)
    ref = _state_dict(straight)
    assert _differing(ref, _state_dict(resumed)) == []
    # without the hook the resumed run repeats the first iterations' model-side draws
    assert len(_differing(ref, _state_dict(unhooked))) > len(ref) // 2
    saved = load_checkpoint_file(osp.join(osp.dirname(straight), 'iter_3.pth'))[CHECKPOINT_KEY]
    assert saved['world_size'] == 1 and len(saved['ranks']) == 1
    assert set(saved['ranks'][0]['modules']) == {'data_preprocessor', 'auxiliary_head'}
    assert CHECKPOINT_KEY not in load_checkpoint_file(unhooked)


def _dist_worker(rank, port, data_root, root):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE='2', LOCAL_RANK=str(rank))
    os.chdir(root)  # mmengine's distributed evaluation writes a .dist_test folder here
    try:
        _straight_and_resumed(root, _options(data_root, 2), launcher='pytorch')
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed missing')
def test_resume_with_two_gloo_ranks_and_dataloader_workers(tmp_path, data_root):
    """Two CPU processes (gloo, as tools/dist_train.sh; one state per rank in the checkpoint),
    each with 2 persistent dataloader workers, whose generators the replay brings back."""
    import socket

    import torch._dynamo  # noqa: F401  (what DDP imports, ~4 s: once here, not per process)
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.start_processes(_dist_worker, args=(port, data_root, tmp_path), nprocs=2,
                       start_method='fork')
    ref = _state_dict(tmp_path / 'straight' / f'iter_{ITERS}.pth')
    assert _differing(ref, _state_dict(tmp_path / 'resumed' / f'iter_{ITERS}.pth')) == []
    saved = load_checkpoint_file(tmp_path / 'straight' / 'iter_3.pth')[CHECKPOINT_KEY]
    assert saved['world_size'] == 2
    assert not torch.equal(saved['ranks'][0]['torch'], saved['ranks'][1]['torch'])


# --- the hook's decisions, with a stand-in runner ----------------------------------------------
class _Logger:

    def __init__(self):
        self.records = []

    def info(self, msg):
        self.records.append((logging.INFO, msg))

    def warning(self, msg):
        self.records.append((logging.WARNING, msg))


def _runner(iter_=3, seed=0):
    model = torch.nn.Sequential(SGMHead(in_channels=[4], in_index=[0], num_classes=2, seed=1))
    loop = SimpleNamespace(dataloader_iterator=iter(range(100)))
    return SimpleNamespace(iter=iter_, seed=seed, model=model, train_loop=loop, hooks=[],
                           logger=_Logger())


def _draws(model):
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(),
            model[0].draw_pairing(4))


def _saved_checkpoint(runner):
    hook, checkpoint = RNGStateHook(), dict(meta=dict(seed=runner.seed))
    hook.before_save_checkpoint(runner, checkpoint)
    return checkpoint


def test_restores_every_generator_after_the_replay():
    saver = _runner()
    checkpoint = _saved_checkpoint(saver)
    expected = _draws(saver.model)
    runner = _runner()  # the resumed process: fresh generators
    hook = RNGStateHook()
    hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train(runner)
    loop = runner.train_loop
    assert [next(loop.dataloader_iterator) for _ in range(3)] == [0, 1, 2]  # the replay
    _draws(runner.model)  # draws during the replay are overwritten by the restore
    assert next(loop.dataloader_iterator) == 3  # the batch of iteration 4 ...
    assert _draws(runner.model) == expected  # ... is fetched after the restore
    assert not hasattr(loop.dataloader_iterator, '_restore')  # the real iterator is back
    assert 'restored the random states of iteration 3' in runner.logger.records[-1][1]


def test_fresh_runs_and_load_from_restore_nothing():
    checkpoint = _saved_checkpoint(_runner())
    runner = _runner(iter_=0)  # load_from without resume: training starts at iteration 0
    before = torch.get_rng_state()
    hook = RNGStateHook()
    hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train(runner)
    next(runner.train_loop.dataloader_iterator)
    assert torch.equal(torch.get_rng_state(), before) and runner.logger.records == []


@pytest.mark.parametrize('case, message', [
    ('no_states', 'carries no random states'),
    ('world_size', 'random states of 2 process'),
    ('seed', 'trained with seed 0, this run built its dataloader with seed 7'),
])
def test_a_resume_that_cannot_be_exact_says_so(case, message):
    checkpoint = _saved_checkpoint(_runner())
    if case == 'no_states':
        del checkpoint[CHECKPOINT_KEY]
    elif case == 'world_size':
        checkpoint[CHECKPOINT_KEY]['world_size'] = 2
    runner = _runner(seed=7 if case == 'seed' else 0)
    hook = RNGStateHook()
    hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train(runner)
    warnings = [m for level, m in runner.logger.records if level == logging.WARNING]
    assert len(warnings) == 1 and message in warnings[0]


def test_validation_does_not_shift_the_training_randomness():
    runner, hook = _runner(), RNGStateHook()
    hook.before_train(runner)
    state = _capture_rng_state(runner.model)
    hook.before_val(runner)
    torch.rand(10), np.random.rand(10), random.random(), runner.model[0].draw_pairing(4)
    hook.after_val(runner)
    after = _capture_rng_state(runner.model)
    assert torch.equal(after['torch'], state['torch']) and after['numpy'] == state['numpy']
    assert after['python'] == state['python']
    assert torch.equal(after['modules']['0']['generator'], state['modules']['0']['generator'])


def test_registered_and_in_the_shipped_runtime():
    from mmengine.config import Config
    assert HOOKS.get('RNGStateHook') is RNGStateHook
    hooks = Config.fromfile(CONFIG).custom_hooks
    assert dict(type='RNGStateHook') in hooks

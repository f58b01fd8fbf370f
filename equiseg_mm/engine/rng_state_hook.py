"""Save the random state of a training run in its checkpoints, so that a resumed run goes on
exactly as the uninterrupted run would have."""
import random
from typing import Callable, Iterator, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

#: The checkpoint key (top level, next to ``state_dict``) that holds the random states.
CHECKPOINT_KEY = 'rng_state'


def _rng_modules(model: torch.nn.Module) -> Iterator:
    """(name, module) for every module of ``model`` that follows the random-state protocol."""
    if is_model_wrapper(model):
        model = model.module
    for name, module in model.named_modules():
        if callable(getattr(module, 'rng_state_dict', None)) and \
                callable(getattr(module, 'load_rng_state_dict', None)):
            yield name, module


def _to_cpu(obj):
    """``obj`` with every tensor on the CPU (``runner.resume`` maps a checkpoint to the GPU,
    where ``torch.set_rng_state`` and ``Generator.set_state`` refuse their byte tensors)."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _capture_rng_state(model: Optional[torch.nn.Module] = None) -> dict:
    """This process's random state: python, numpy, torch CPU, torch CUDA (current device, when
    CUDA is in use) and every module of ``model`` with the random-state protocol.

    Only plain python values and byte tensors: a checkpoint holding it loads with
    ``torch.load(weights_only=True)``.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(
        python=random.getstate(),
        numpy=dict(bit_generator=str(name), keys=[int(k) for k in keys], pos=int(pos),
                   has_gauss=int(has_gauss), cached_gaussian=float(cached)),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    if model is not None:
        state['modules'] = {name: module.rng_state_dict() for name, module in _rng_modules(model)}
    return state


def _restore_rng_state(state: dict, model: Optional[torch.nn.Module] = None) -> List[str]:
    """Restore what :func:`_capture_rng_state` returned; returns what could not be restored."""
    state = _to_cpu(state)
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    np_state = state['numpy']
    np.random.set_state((np_state['bit_generator'], np.asarray(np_state['keys'], dtype=np.uint32),
                         np_state['pos'], np_state['has_gauss'], np_state['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    missed = []
    if 'cuda' in state:
        if torch.cuda.is_available():
            torch.cuda.set_rng_state(state['cuda'])
        else:
            missed.append('cuda (saved on a GPU, resumed without one)')
    if model is not None:
        saved = dict(state.get('modules', {}))
        for name, module in _rng_modules(model):
            if name in saved:
                module.load_rng_state_dict(saved.pop(name))
            else:
                missed.append(f'module {name!r} (not in the checkpoint)')
        missed += [f'module {name!r} (not in the model)' for name in saved]
    return missed


class _RestoreAfterReplay:
    """Stands in for ``IterBasedTrainLoop.dataloader_iterator`` while a resumed loop replays
    the batches of the iterations it skips; right before the first batch after them it calls
    ``restore`` and puts the real iterator back."""

    def __init__(self, loop, iterator, skip: int, restore: Callable[[], None]) -> None:
        self._loop, self._iterator, self._skip, self._restore = loop, iterator, skip, restore

    def __iter__(self):
        return self

    def __next__(self):
        if self._skip > 0:
            self._skip -= 1
        else:
            self._loop.dataloader_iterator = self._iterator
            self._restore()
        return next(self._iterator)

    def __getattr__(self, name):
        return getattr(self._iterator, name)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Store every random state of a training iteration in each checkpoint and restore it when
    training resumes, so that ``--resume`` ends where the uninterrupted run ends (bit-identical
    weights on the CPU).

    What a run's randomness is made of, and who keeps it:

    - the data order (the sampler's generator) and the augmentations (numpy/python RNGs of the
      process that runs the transforms: each dataloader worker, seeded by mmengine's
      ``worker_init_fn`` from ``randomness.seed``, worker id and rank, or the main process
      with ``num_workers=0``): mmengine's ``IterBasedTrainLoop`` replays the batches of the
      skipped iterations on resume, which brings the sampler and the workers to the state of
      the uninterrupted run;
    - the main process's torch CPU/CUDA, numpy and python generators (drop path, dropout,
      the SGM pairing with ``seed=None``, modality dropout, and the transforms with
      ``num_workers=0``): saved by this hook, per rank;
    - generators owned by modules (e.g. ``SGMHead(seed=...)``): saved by this hook through the
      module's ``rng_state_dict()`` / ``load_rng_state_dict(state)`` (any module of the model
      that has both methods is included, under its name in ``named_modules()``).

    Saving: the states of the end of an iteration (after every other ``after_train_iter`` hook,
    before :class:`~mmengine.hooks.CheckpointHook`) go into ``checkpoint['rng_state']`` as
    ``dict(world_size=W, ranks=[state of rank 0, ..., state of rank W-1])``. Under distributed
    training the ranks' states are gathered to rank 0 at the iterations where a
    ``CheckpointHook`` saves (one small collective) and when validation starts (for
    ``save_best`` checkpoints). Only plain python values and byte tensors are stored, so the
    checkpoint still loads with ``weights_only=True``.

    Restoring: on resume (training starts at iteration k > 0), each rank restores its own states
    right before the loop fetches the batch of iteration k + 1, i.e. after mmengine's replay
    (which, with ``num_workers=0``, draws the replayed augmentations from the main process's
    generators). A checkpoint loaded with ``load_from`` without resume restores nothing.

    Validation during training runs between two save points, so it could shift the training's
    random stream (e.g. a new dataloader iterator draws a seed from torch's generator): the hook
    puts the random state back after validation, which makes the training's randomness
    independent of whether, and how often, it validates.

    Limits (each logs a warning where it can be detected): resuming with another number of
    processes restores nothing (the data shards differ anyway); another ``num_workers``, or
    ``randomness.seed=None`` (mmengine builds the dataloader with a fresh seed before it reads
    the checkpoint's), changes the data order or augmentations; a checkpoint written without
    this hook carries no states; generators outside the model and the global ones (e.g. a
    ``torch.Generator`` held by a transform) are not seen; CUDA is exact only as far as its
    kernels are deterministic.

    Without this hook in the config, ``checkpoint['rng_state']`` is neither written nor read:
    a resume then replays the same data and augmentations but restarts the main process's
    generators from the seed, so drop path, dropout, SGM pairings and modality dropout repeat
    the draws of the first iterations.
    """

    priority = 80  # between LOW (70) and VERY_LOW (90, CheckpointHook): last before the save

    def __init__(self) -> None:
        self._states: Optional[List[dict]] = None  # per rank, at the last save point
        self._val_state: Optional[dict] = None  # this rank's, while validating in training
        self._training = False
        self._loaded = None  # checkpoint['rng_state'] of the last loaded checkpoint
        self._seeds = (None, None)  # (checkpoint's seed, this run's seed) at loading

    # --- saving --------------------------------------------------------------------------------
    def _gather(self, runner) -> List[dict]:
        local = _capture_rng_state(runner.model)
        return all_gather_object(local) if get_world_size() > 1 else [local]

    @staticmethod
    def _checkpoint_due(runner, by_epoch: bool) -> bool:
        for hook in runner.hooks:
            if not isinstance(hook, CheckpointHook) or hook.by_epoch != by_epoch:
                continue
            if by_epoch:
                due = hook.every_n_epochs(runner, hook.interval, hook.save_begin) or (
                    hook.save_last and hook.is_last_train_epoch(runner))
            else:
                due = hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or (
                    hook.save_last and hook.is_last_train_iter(runner))
            if due:
                return True
        return False

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._states = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        # one process: captured when the checkpoint is saved; several: gathered now, where
        # every rank takes part, because only rank 0 saves
        if get_world_size() > 1 and self._checkpoint_due(runner, by_epoch=False):
            self._states = self._gather(runner)

    def after_train_epoch(self, runner) -> None:
        if get_world_size() > 1 and self._checkpoint_due(runner, by_epoch=True):
            self._states = self._gather(runner)

    def before_val(self, runner) -> None:
        if not self._training:
            return
        self._states = self._gather(runner)
        self._val_state = self._states[get_rank()]

    def after_val(self, runner) -> None:
        if self._val_state is not None:
            _restore_rng_state(self._val_state, runner.model)
            self._val_state = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        states = self._states
        if states is None:
            if get_world_size() > 1:
                runner.logger.warning(
                    f'RNGStateHook: checkpoint at iteration {runner.iter} saved outside the '
                    'points where the ranks gather their random states (a CheckpointHook '
                    'interval or validation): it carries none, and a resume from it is not '
                    'exact')
                return
            states = [_capture_rng_state(runner.model)]
        checkpoint[CHECKPOINT_KEY] = dict(world_size=len(states), ranks=states)

    # --- restoring -----------------------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = checkpoint.get(CHECKPOINT_KEY)
        # runner.resume() adopts the checkpoint's seed only after this hook, and after the
        # dataloader (sampler seed, worker seeds) was built with this run's
        self._seeds = (checkpoint.get('meta', {}).get('seed'), runner.seed)

    def before_train(self, runner) -> None:
        self._training = True
        loaded, self._loaded = self._loaded, None
        if runner.iter == 0:  # a fresh run, or load_from without resume: nothing to restore
            return
        saved_seed, seed = self._seeds
        if get_rank() == 0 and saved_seed is not None and saved_seed != seed:
            runner.logger.warning(
                f'RNGStateHook: the checkpoint was trained with seed {saved_seed}, this run '
                f'built its dataloader with seed {seed}: the data order and augmentations after '
                'the resume differ from the uninterrupted run; set randomness.seed (the '
                "checkpoint's) for an exact resume")
        if loaded is None:
            runner.logger.warning(
                'RNGStateHook: the checkpoint carries no random states (written without '
                'RNGStateHook, or by several ranks outside a save point): the resumed run '
                'draws different drop-path, dropout, SGM-pairing and modality-dropout '
                'randomness than the uninterrupted run would have')
            return
        if loaded['world_size'] != get_world_size():
            runner.logger.warning(
                f'RNGStateHook: the checkpoint holds the random states of '
                f'{loaded["world_size"]} process(es), this run has {get_world_size()}: no state '
                'is restored, and the resumed run is not the uninterrupted run continued')
            return
        state, done_iters = loaded['ranks'][get_rank()], runner.iter

        def restore():
            missed = _restore_rng_state(state, runner.model)
            runner.logger.info(
                f'RNGStateHook: restored the random states of iteration {done_iters} '
                f'({get_world_size()} process(es))' +
                (f'; not restored: {", ".join(missed)}' if missed else ''))

        iterator = getattr(runner.train_loop, 'dataloader_iterator', None)
        if iterator is None:  # no replay (e.g. EpochBasedTrainLoop): restore now
            restore()
        else:
            runner.train_loop.dataloader_iterator = _RestoreAfterReplay(
                runner.train_loop, iterator, runner.iter, restore)

    def after_train(self, runner) -> None:
        self._training = False

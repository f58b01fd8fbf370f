"""Save the random state of a training run in its checkpoints, for a bit-identical resume."""
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
    """``obj`` with every tensor on the CPU, where ``torch.set_rng_state`` needs them."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _capture_rng_state(model: Optional[torch.nn.Module] = None) -> dict:
    """This process's python, numpy, torch CPU/CUDA and module random states, as plain python
    values and byte tensors (a checkpoint holding them loads with ``weights_only=True``)."""
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
    """Replays ``skip`` batches, then calls ``restore`` and puts the loop's iterator back."""

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
    """Save the random states of the main process in checkpoints and restore them on resume.

    The states (torch CPU/CUDA, numpy, python, and every module with ``rng_state_dict()`` /
    ``load_rng_state_dict(state)``) go per rank into ``checkpoint['rng_state']``. On resume each
    rank restores them after mmengine's replay of the skipped batches; they are also restored
    after each validation during training. Another number of processes, or a checkpoint without
    states, restores nothing (a warning says so); another ``num_workers`` or
    ``randomness.seed`` changes the data, and CUDA is exact only with deterministic kernels.
    """

    priority = 80  # between LOW (70) and VERY_LOW (90, CheckpointHook): last before the save

    def __init__(self) -> None:
        self._states: Optional[List[dict]] = None  # per rank, at the last save point
        self._val_state: Optional[dict] = None  # this rank's, while validating in training
        self._training = False
        self._loaded = None  # checkpoint['rng_state'] of the last loaded checkpoint
        self._seeds = (None, None)  # (checkpoint's seed, this run's seed) at loading

    def _gather(self, runner) -> List[dict]:
        local = _capture_rng_state(runner.model)
        return all_gather_object(local) if get_world_size() > 1 else [local]

    def _gather_if_due(self, runner, by_epoch: bool) -> None:
        # one process: captured at the save; several: gathered here, as only rank 0 saves
        if get_world_size() == 1:
            return
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and hook.by_epoch == by_epoch:
                every = hook.every_n_epochs if by_epoch else hook.every_n_train_iters
                last = hook.is_last_train_epoch if by_epoch else hook.is_last_train_iter
                if every(runner, hook.interval, hook.save_begin) or (
                        hook.save_last and last(runner)):
                    self._states = self._gather(runner)
                    return

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._states = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._gather_if_due(runner, by_epoch=False)

    def after_train_epoch(self, runner) -> None:
        self._gather_if_due(runner, by_epoch=True)

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

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = checkpoint.get(CHECKPOINT_KEY)
        # runner.resume() adopts the checkpoint's seed after this hook and the dataloader build
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

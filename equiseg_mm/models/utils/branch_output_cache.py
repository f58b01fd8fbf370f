"""Absent modalities cost nothing at inference: a branch fed only zeros does not run.

A branch's output for an all-zero input of a given shape is a constant of its weights. In eval
mode without gradients, :class:`BranchOutputCache` runs a branch whose input is zero for every
sample of the batch (a modality the data preprocessor's missing-modality protocol zeroed, as
``inference_multimodal`` and ``tools/infer.py`` do for an absent sensor) once per weights and
input shape, and returns that output again afterwards. The returned tensors are the very ones
the branch computed for the same input, so results are bit-identical to running the branch.
:class:`~equiseg_mm.models.MultiModalMiT` holds one (``skip_absent_branches=True``, the
default); :func:`reuse_branch_outputs` (the missing-modality test loop) adds the reuse of an
input that is unchanged since the previous pass.
"""
import contextlib
import copy
import itertools
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ['BranchOutputCache', 'reuse_branch_outputs']


def _weights_key(branch: nn.Module) -> Tuple:
    """Where the branch's parameters and buffers live and how often they were changed in place:
    any optimizer step, ``load_state_dict``, ``copy_`` or device move changes it."""
    return tuple((t.data_ptr(), t._version)
                 for t in itertools.chain(branch.parameters(), branch.buffers()))


def _input_key(x: Tensor) -> Tuple:
    """What besides the weights decides a branch's output for zeros: shape, dtype, device and
    the autocast state of that device."""
    device = x.device.type
    autocast = torch.is_autocast_enabled(device)
    return (tuple(x.shape), x.dtype, x.device, autocast,
            torch.get_autocast_dtype(device) if autocast else None)


def _is_capturing() -> bool:
    """Whether the forward is being traced, exported or compiled (a cached constant would be
    baked into the graph)."""
    compiler = getattr(torch, 'compiler', None)
    flags = [getattr(compiler, name, None) for name in ('is_compiling', 'is_exporting')]
    return torch.jit.is_tracing() or torch.jit.is_scripting() or \
        torch.onnx.is_in_onnx_export() or any(flag() for flag in flags if flag is not None)


class BranchOutputCache:
    """Outputs of the branches of a multi-branch backbone for all-zero inputs, reused.

    Calling the cache with the branches and their inputs runs them, except in eval mode without
    gradients (and outside tracing, ONNX export and ``torch.compile``), where a branch whose
    input is zero for every sample returns its earlier output for zeros of the same shape,
    dtype, device and autocast state, and runs only the first time. One reduction per branch
    (and, on a GPU, one synchronisation per forward) decides which inputs are zero. With
    ``reuse_last`` (set by :func:`reuse_branch_outputs`) a branch whose input equals its
    previous input also returns its previous output.

    Staleness: an entry is used only while the branch's parameters and buffers are the same
    tensors, unchanged in place (their data pointers and version counters; an optimizer step,
    ``load_state_dict``, ``copy_`` and ``.to()`` all change them), and
    :class:`~equiseg_mm.models.MultiModalMiT` clears the cache whenever its ``train()`` or
    ``eval()`` is called. In-place changes through ``.data`` bypass the version counters:
    call :meth:`clear` after them. Copies (``copy.deepcopy``) and pickles start empty.

    Size: per branch at most ``max_shapes`` zero-input outputs (least recently used dropped)
    and, with ``reuse_last``, one previous output.

    Args:
        max_shapes (int): Input shapes whose zero-input outputs are kept per branch.
            Defaults to 4.
    """

    def __init__(self, max_shapes: int = 4) -> None:
        if not isinstance(max_shapes, int) or isinstance(max_shapes, bool) or max_shapes < 1:
            raise ValueError(f'max_shapes must be an int >= 1, got {max_shapes!r}')
        self.max_shapes = max_shapes
        #: bool: Also reuse the output of an input equal to the branch's previous input.
        self.reuse_last = False
        #: int: Branch runs saved.
        self.hits = 0
        self._zero: Dict[int, Tuple[Tuple, 'OrderedDict[Tuple, Any]']] = {}
        self._last: Dict[int, Tuple[Tuple, Tensor, Any]] = {}

    def clear(self) -> None:
        """Drop every kept output (``hits`` stays)."""
        self._zero.clear()
        self._last.clear()

    def __len__(self) -> int:
        """int: The number of zero-input outputs kept."""
        return sum(len(entries) for _, entries in self._zero.values())

    def __deepcopy__(self, memo: dict) -> 'BranchOutputCache':
        fresh = copy.copy(self)
        fresh._zero, fresh._last = {}, {}
        return fresh

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _zero={}, _last={})

    @staticmethod
    def active(branches: Sequence[nn.Module]) -> bool:
        """Whether outputs may be reused now: eval mode, no gradients, no graph capture."""
        return not torch.is_grad_enabled() and not any(b.training for b in branches) \
            and not _is_capturing()

    def __call__(self, branches: Sequence[nn.Module], inputs: Sequence[Tensor]) -> List[Any]:
        """Each branch's output for its input (see the class docs for which ones run).

        Args:
            branches (Sequence[nn.Module]): The branches.
            inputs (Sequence[Tensor]): One input per branch, (B, C_m, H, W).

        Returns:
            list: Each branch's output, as the branch returns it.
        """
        if not self.active(branches):
            return [branch(x) for branch, x in zip(branches, inputs)]
        # one host read for all branches (a GPU synchronises once, before any branch runs)
        present = torch.stack([x.any() for x in inputs]).tolist()
        return [self._run(i, branch, x, bool(p))
                for i, (branch, x, p) in enumerate(zip(branches, inputs, present))]

    def _run(self, index: int, branch: nn.Module, x: Tensor, present: bool) -> Any:
        if not present:
            return self._zero_output(index, branch, x)
        if not self.reuse_last:
            return branch(x)
        weights = _weights_key(branch)
        last = self._last.get(index)
        if last is not None and last[0] == weights and last[1].shape == x.shape \
                and last[1].dtype == x.dtype and last[1].device == x.device \
                and torch.equal(last[1], x):
            self.hits += 1
            return _fresh(last[2])
        out = branch(x)
        self._last[index] = (weights, x, out)
        return out

    def _zero_output(self, index: int, branch: nn.Module, x: Tensor) -> Any:
        weights = _weights_key(branch)
        held = self._zero.get(index)
        if held is None or held[0] != weights:  # new weights: every kept output is stale
            held = (weights, OrderedDict())
            self._zero[index] = held
        entries = held[1]
        key = _input_key(x)
        if key in entries:
            entries.move_to_end(key)
            self.hits += 1
            return _fresh(entries[key])
        out = branch(x)
        entries[key] = out
        while len(entries) > self.max_shapes:
            entries.popitem(last=False)
        return out


def _fresh(out: Any) -> Any:
    """A new list/tuple around the kept tensors (a caller may change the container, never the
    tensors: they are used without gradients and copied when the backbone stacks them)."""
    return type(out)(out) if isinstance(out, (list, tuple)) else out


@contextlib.contextmanager
def reuse_branch_outputs(backbone: nn.Module, max_zero_shapes: int = 4) -> Iterator[
        BranchOutputCache]:
    """Within this context, an inference pass of ``backbone`` also reuses a branch's output when
    the branch sees the same values as its previous input (besides the all-zero inputs of
    :class:`BranchOutputCache`). The branches are independent, so a test of every modality
    subset on one batch runs each branch at most twice per batch (its input and zeros) instead
    of once per subset, with the same results. Only active in eval mode without gradients.

    Args:
        backbone (nn.Module): A :class:`~equiseg_mm.models.MultiModalMiT`; its own cache is
            used (one is lent for the context when it was built with
            ``skip_absent_branches=False``).
        max_zero_shapes (int): Input shapes of zero-input outputs kept per branch by a lent
            cache. Defaults to 4.

    Yields:
        BranchOutputCache: The cache; its ``hits`` counts the branch runs saved.
    """
    own = getattr(backbone, 'branch_cache', None)
    cache = own if own is not None else BranchOutputCache(max_zero_shapes)
    saved = cache.reuse_last
    backbone.branch_cache = cache
    cache.reuse_last = True
    try:
        yield cache
    finally:
        cache.reuse_last = saved
        cache._last.clear()
        backbone.branch_cache = own

"""Checkpoint loading that keeps ``torch.load(weights_only=True)``.

torch >= 2.6 unpickles checkpoints with ``weights_only=True``: only tensors, containers and an
allow-list of types, because a pickle can otherwise run any code while it loads. mmengine's own
checkpoints hold a few more types (the message hub's ``HistoryBuffer`` objects with their numpy
arrays and scalars), so mmengine's stock loader refuses them under torch 2.6+.
:func:`load_checkpoint_file` allows exactly those types, inside a ``torch.serialization.
safe_globals`` context (nothing is added to torch's process-wide allow-list):

- ``mmengine.logging.HistoryBuffer``;
- numpy arrays, dtypes and scalars (``numpy.ndarray``, ``numpy.dtype`` and its per-type
  subclasses, ``numpy.core.multiarray._reconstruct`` / ``scalar``);
- ``builtins.getattr`` *only* in the one form a pickled ``HistoryBuffer`` uses it,
  ``getattr(HistoryBuffer, <statistics method>)``: any other use fails to load.

A checkpoint holding anything else fails with :class:`UntrustedCheckpointError`, which names the
types and the opt-in: list the file (or a folder above it) in the environment variable
``EQUISEG_TRUSTED_CHECKPOINTS`` (paths separated by ``os.pathsep``) to load it with
``weights_only=False``. Do that only for files you trust as you would trust a program.
"""
import contextlib
import os
import os.path as osp
import pickle
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch

TRUST_ENV = 'EQUISEG_TRUSTED_CHECKPOINTS'


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds types that ``weights_only`` loading does not allow."""


def _history_buffer_getattr(obj, name):
    """Stands in for ``builtins.getattr`` while unpickling: only the statistics methods of
    ``HistoryBuffer`` (how a pickled buffer refers to them) can be looked up."""
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and isinstance(name, str) and not name.startswith('_') and callable(
            getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refused getattr({obj!r}, {name!r}) while loading a checkpoint: only '
        'HistoryBuffer statistics methods may be looked up')


def _numpy_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    core = getattr(np, '_core', None) or np.core  # numpy 2 renamed core -> _core
    items: List[Union[Callable, Tuple[Callable, str]]] = [np.ndarray, np.dtype]
    for module in sorted({core.multiarray.__name__, 'numpy.core.multiarray',
                          'numpy._core.multiarray'}):
        items.append((core.multiarray._reconstruct, f'{module}._reconstruct'))
        items.append((core.multiarray.scalar, f'{module}.scalar'))
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25: one dtype class per scalar type
    if dtypes is not None:
        items += [getattr(dtypes, name) for name in dir(dtypes)
                  if name.endswith('DType') and isinstance(getattr(dtypes, name), type)]
    return items


def allowed_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The types (and the one restricted function) that mmengine checkpoints need, in the form
    ``torch.serialization.safe_globals`` takes."""
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')] + _numpy_globals()


def _trusted_paths() -> List[str]:
    raw = os.environ.get(TRUST_ENV, '')
    return [osp.realpath(osp.expanduser(p)) for p in raw.split(os.pathsep) if p.strip()]


def is_trusted(filename: str) -> bool:
    """Whether ``filename`` (or a folder above it) is listed in ``EQUISEG_TRUSTED_CHECKPOINTS``."""
    path = osp.realpath(osp.expanduser(filename))
    return any(path == t or path.startswith(t.rstrip(os.sep) + os.sep) for t in _trusted_paths())


def _unsafe_names(filename: str) -> List[str]:
    allowed = set()
    for item in allowed_globals():
        if isinstance(item, tuple):
            allowed.add(item[1])
        else:
            allowed.add(f'{item.__module__}.{item.__qualname__}')
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception:  # not a zip checkpoint: the unpickler's own message has to do
        return []
    return [n for n in names if n not in allowed]


def load_checkpoint_file(filename: str, map_location=None, trusted: Optional[bool] = None):
    """Load a local checkpoint with ``weights_only=True`` and mmengine's types allowed.

    Args:
        filename (str): Path of the checkpoint.
        map_location: As in ``torch.load``. Defaults to None.
        trusted (bool, optional): Load with ``weights_only=False`` (full unpickling, which can run
            code). None (default) trusts the file only if it is listed in
            ``EQUISEG_TRUSTED_CHECKPOINTS``.

    Returns:
        The unpickled checkpoint.

    Raises:
        FileNotFoundError: If the file does not exist.
        RuntimeError: If the file cannot be read (truncated, corrupt); the message names it.
        UntrustedCheckpointError: If the file holds a type outside the allowed set; the message
            names the types and the opt-in.
    """
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} can not be found.')
    if trusted is None:
        trusted = is_trusted(filename)
    # torch < 2.5 has no safe_globals context: plain weights_only loading (tensors only)
    allow = torch.serialization.safe_globals(allowed_globals()) if hasattr(
        torch.serialization, 'safe_globals') and not trusted else contextlib.nullcontext()
    try:
        with allow:
            return torch.load(filename, map_location=map_location, weights_only=not trusted)
    except UntrustedCheckpointError:
        raise
    except pickle.UnpicklingError as exc:
        if trusted:
            raise _unreadable(filename, exc) from exc
        names = _unsafe_names(filename)
        what = (f'types outside what mmengine checkpoints hold: {", ".join(names)}'
                if names else f'content that weights_only loading refuses ({exc})')
        raise UntrustedCheckpointError(
            f'checkpoint {filename} holds {what}. Loading it fully would unpickle them, which '
            'can run arbitrary code. If you trust this file, list it (or a folder above it) in '
            f'the environment variable {TRUST_ENV} (paths separated by "{os.pathsep}"), e.g. '
            f'{TRUST_ENV}={osp.abspath(filename)}') from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise _unreadable(filename, exc) from exc


def _unreadable(filename: str, exc: Exception) -> RuntimeError:
    return RuntimeError(f'checkpoint {filename} cannot be read: it is truncated, corrupt or not '
                        f'a PyTorch checkpoint ({type(exc).__name__}: {exc})')


def load_checkpoint(model: torch.nn.Module, filename: str, map_location=None,
                    strict: bool = False) -> dict:
    """mmengine's ``load_checkpoint``, reading a local file with :func:`load_checkpoint_file`
    whatever loader mmengine has registered (a URL goes to mmengine's loader for its scheme).

    Returns:
        dict: The loaded checkpoint.
    """
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint_to_model
    if '://' in str(filename):
        checkpoint = CheckpointLoader.load_checkpoint(str(filename), map_location=map_location)
    else:
        checkpoint = load_checkpoint_file(filename, map_location=map_location)
    return _load_checkpoint_to_model(model, checkpoint, strict=strict)

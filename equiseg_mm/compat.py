"""Runtime compatibility fixes for the pinned OpenMMLab stack.

Each fix is idempotent, is a no-op where it is not needed, and is applied once when
``equiseg_mm`` is imported (:func:`apply_compat`). They exist because the stack that installs
from ``constraints.txt`` (and any mmseg 1.2 environment on torch >= 2.6) has two known gaps:

1. **mmcv-lite has no ``mmcv._ext``.** ``mmcv.ops`` therefore fails to import, yet mmseg imports
   ``mmcv.ops.point_sample`` (pure PyTorch in mmcv's source) and ``sigmoid_focal_loss``
   unconditionally, so ``mmseg.models``, ``mmseg.datasets`` and ``mmseg.apis`` fail. The fix
   registers a small stand-in ``mmcv.ops`` module that loads mmcv's own pure-PyTorch
   ``point_sample.py`` and raises ``ModuleNotFoundError`` (the error mmseg's optional imports
   expect) for every compiled op, naming the op and the fix (install full ``mmcv``).
2. **torch >= 2.6 defaults ``torch.load(weights_only=True)``.** mmengine's checkpoints hold
   ``HistoryBuffer`` objects and numpy arrays in the message hub, so ``load_checkpoint``,
   ``--resume``, ``load_from`` and ``init_model`` fail. The fix re-registers mmengine's loader
   for *local* files as :func:`equiseg_mm.utils.checkpoint.load_checkpoint_file`, which keeps
   ``weights_only=True`` and allows exactly the types mmengine's checkpoints hold; anything else
   fails with an error that names the type and the opt-in for a trusted file.
"""
import importlib.util
import os.path as osp
import sys
import types

_APPLIED = {}

_REQUIRED = {
    'torch': ('2.1.0', None),
    'mmengine': ('0.10.0', '0.11.0'),
    'mmcv': ('2.0.0', '2.2.0'),
    'mmseg': ('1.2.0', '1.3.0'),
}


def _version_tuple(version: str) -> tuple:
    from packaging.version import parse
    return parse(version).release


def check_versions() -> None:
    """Raise ``ImportError`` naming the package and range when a dependency is out of range."""
    import importlib
    problems = []
    for name, (low, high) in _REQUIRED.items():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # pragma: no cover - depends on the environment
            problems.append(f'{name} is not importable ({exc})')
            continue
        version = getattr(module, '__version__', '0').split('+')[0]
        rng = f'>={low}' + (f',<{high}' if high else '')
        if _version_tuple(version) < _version_tuple(low) or (
                high and _version_tuple(version) >= _version_tuple(high)):
            problems.append(f'{name} {version} is installed but equiseg_mm needs {name}{rng}')
    if problems:
        raise ImportError(
            'equiseg_mm: incompatible dependencies: ' + '; '.join(problems) +
            '. Install the pinned set with '
            '`pip install -r requirements.txt -c constraints.txt`.')


def _mmcv_ops_available() -> bool:
    if 'mmcv.ops' in sys.modules:
        return True
    return importlib.util.find_spec('mmcv._ext') is not None


def patch_mmcv_ops() -> bool:
    """Install a pure-PyTorch stand-in for ``mmcv.ops`` when mmcv has no compiled ops.

    Returns:
        bool: True if the stand-in was installed by this call.
    """
    if _mmcv_ops_available():
        return False
    import mmcv

    ops_dir = osp.join(osp.dirname(mmcv.__file__), 'ops')
    ops = types.ModuleType('mmcv.ops')
    ops.__path__ = []  # a package, so ``mmcv.ops.point_sample`` resolves
    ops.__file__ = osp.join(ops_dir, '__init__.py')
    ops.__equiseg_stub__ = True

    spec = importlib.util.spec_from_file_location(
        'mmcv.ops.point_sample', osp.join(ops_dir, 'point_sample.py'))
    point_sample_mod = importlib.util.module_from_spec(spec)
    sys.modules['mmcv.ops.point_sample'] = point_sample_mod
    spec.loader.exec_module(point_sample_mod)
    ops.point_sample = point_sample_mod.point_sample
    ops.bilinear_grid_sample = point_sample_mod.bilinear_grid_sample

    def sigmoid_focal_loss(*args, **kwargs):
        raise RuntimeError(
            'sigmoid_focal_loss needs the compiled ops of full mmcv, but mmcv-lite is '
            'installed. Use another loss (e.g. CrossEntropyLoss) or install full mmcv<2.2.0.')

    ops.sigmoid_focal_loss = sigmoid_focal_loss

    def __getattr__(name):  # PEP 562: any other op is a compiled one
        if name.startswith('__'):
            raise AttributeError(name)
        raise ModuleNotFoundError(
            f'mmcv.ops.{name} needs the compiled ops of full mmcv, but mmcv-lite is '
            'installed (no mmcv._ext). Install full mmcv<2.2.0 to use it.')

    ops.__getattr__ = __getattr__
    sys.modules['mmcv.ops'] = ops
    mmcv.ops = ops
    return True


def _load_local_checkpoint(filename, map_location):
    """mmengine's local checkpoint loader, with ``weights_only=True`` kept (see module docs)."""
    from .utils.checkpoint import load_checkpoint_file
    return load_checkpoint_file(filename, map_location=map_location)


def patch_checkpoint_loading() -> bool:
    """Make mmengine load its own local checkpoints under torch >= 2.6, safely.

    Returns:
        bool: True if the loader was replaced by this call.
    """
    import torch
    from mmengine.runner.checkpoint import CheckpointLoader
    if not hasattr(torch.serialization, 'safe_globals'):  # torch < 2.5: no allow-list context
        return False
    if CheckpointLoader._schemes.get('') is _load_local_checkpoint:
        return False
    CheckpointLoader.register_scheme(prefixes='', loader=_load_local_checkpoint, force=True)
    return True


def apply_compat() -> dict:
    """Apply every fix once. Returns which fixes this process needed."""
    if not _APPLIED:
        _APPLIED['mmcv_ops'] = patch_mmcv_ops()
        _APPLIED['checkpoint_loading'] = patch_checkpoint_loading()
    return dict(_APPLIED)

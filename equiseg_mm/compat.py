"""Opt-in compatibility fixes for the pinned OpenMMLab stack, and the dependency version guard.

``import equiseg_mm`` checks versions and registers the plugin's parts; it changes nothing else
in the process unless asked. Two fixes exist, each a no-op where it is not needed:

- ``mmcv_ops``: mmcv-lite has no ``mmcv._ext``, so ``mmcv.ops`` fails to import, yet mmseg imports
  ``mmcv.ops.point_sample`` (pure PyTorch in mmcv's source) and ``sigmoid_focal_loss``
  unconditionally. The fix puts a stand-in ``mmcv.ops`` into ``sys.modules`` that loads mmcv's own
  ``point_sample.py`` and raises ``ModuleNotFoundError`` (what mmseg's optional imports expect),
  naming the op, for every compiled op.
- ``checkpoint_loader``: torch >= 2.6 loads with ``weights_only=True``, which refuses the
  ``HistoryBuffer`` objects and numpy types of mmengine's checkpoints (``--resume``,
  ``load_from``). The fix re-registers mmengine's loader for *local* files as
  :func:`equiseg_mm.utils.checkpoint.load_checkpoint_file`, which keeps ``weights_only=True`` and
  allows exactly those types.

Opt in with the environment variable ``EQUISEG_COMPAT`` (comma-separated fix names, or ``all``),
read when ``equiseg_mm`` is imported, or with :func:`enable`. The project's tools and test suite
set ``EQUISEG_COMPAT=all``. Without ``mmcv_ops`` and without compiled mmcv ops, importing
``equiseg_mm`` raises an ``ImportError`` that names both ways out.
"""
import importlib
import importlib.util
import os
import os.path as osp
import sys
import types

ENV_VAR = 'EQUISEG_COMPAT'

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
    return 'mmcv.ops' in sys.modules or importlib.util.find_spec('mmcv._ext') is not None


def require_mmcv_ops() -> None:
    """Raise ``ImportError`` naming the two fixes when ``mmcv.ops`` cannot be imported."""
    if not _mmcv_ops_available():
        raise ImportError(
            'equiseg_mm: mmseg imports mmcv.ops, but the installed mmcv (mmcv-lite) has no '
            'compiled ops (no mmcv._ext). Either install full mmcv<2.2.0, or set the environment '
            f'variable {ENV_VAR}=mmcv_ops (or {ENV_VAR}=all) before importing equiseg_mm to use '
            "its pure-PyTorch stand-in for mmcv.ops (point_sample only; compiled ops raise).")


def _stand_in_mmcv_ops() -> bool:
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
    point_sample_mod.__equiseg_stub__ = True
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
    from .utils.checkpoint import load_checkpoint_file
    return load_checkpoint_file(filename, map_location=map_location)


def _safe_checkpoint_loader() -> bool:
    import torch
    from mmengine.runner.checkpoint import CheckpointLoader
    if not hasattr(torch.serialization, 'safe_globals'):  # torch < 2.5: no allow-list context
        return False
    if CheckpointLoader._schemes.get('') is _load_local_checkpoint:
        return False
    CheckpointLoader.register_scheme(prefixes='', loader=_load_local_checkpoint, force=True)
    return True


FIXES = {'mmcv_ops': _stand_in_mmcv_ops, 'checkpoint_loader': _safe_checkpoint_loader}


def enable(*names: str) -> dict:
    """Apply the named fixes (``'mmcv_ops'``, ``'checkpoint_loader'`` or ``'all'``) in this process.

    Each fix is idempotent. ``mmcv_ops`` helps only before ``mmseg.models`` is first imported,
    and ``import equiseg_mm`` imports it: to use the stand-in, set ``EQUISEG_COMPAT=mmcv_ops``
    (or ``os.environ['EQUISEG_COMPAT']``) before ``import equiseg_mm``, which then applies it
    ahead of the registration imports. ``checkpoint_loader`` can be enabled at any time.

    Args:
        *names (str): Fix names; empty strings are ignored.

    Returns:
        dict: For each named fix, whether this call changed the process.

    Raises:
        ValueError: An unknown name; the message lists the known ones.
    """
    names = [n.strip() for n in names if n.strip()]
    unknown = sorted(set(names) - set(FIXES) - {'all'})
    if unknown:
        raise ValueError(f'unknown equiseg_mm compatibility fix(es) {unknown}; known: '
                         f"{sorted(FIXES)} or 'all' (e.g. {ENV_VAR}=all)")
    if 'all' in names:
        names = list(FIXES)
    return {name: FIXES[name]() for name in dict.fromkeys(names)}


def enable_from_env() -> dict:
    """:func:`enable` the fixes that ``EQUISEG_COMPAT`` names (none when it is unset)."""
    return enable(*os.environ.get(ENV_VAR, '').split(','))

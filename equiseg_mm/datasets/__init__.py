from . import transforms  # noqa: F401  (registers the transforms)
from .deliver_dataset import DELIVERDataset
from .multi_modal_seg_dataset import MultiModalSegDataset
from .muses_dataset import MUSESDataset

__all__ = ['DELIVERDataset', 'MUSESDataset', 'MultiModalSegDataset', 'make_synthetic_deliver']

_LAZY = {'make_synthetic_deliver': 'synthetic_deliver'}


def __getattr__(name: str):
    """``make_synthetic_deliver`` (the synthetic data generator) is imported on first use, not
    by ``import equiseg_mm``: it is a tool for the demo and the tests, not a part a config
    builds. ``equiseg_mm.datasets.make_synthetic_deliver`` stays its public name (and the one
    every generated ``synthetic_meta.json`` records)."""
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f'.{_LAZY[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

from . import transforms  # noqa: F401  (registers the transforms)
from .deliver_dataset import DELIVERDataset
from .multi_modal_seg_dataset import MultiModalSegDataset
from .muses_dataset import MUSESDataset
from .synthetic_deliver import make_synthetic_deliver

__all__ = ['DELIVERDataset', 'MUSESDataset', 'MultiModalSegDataset', 'make_synthetic_deliver']

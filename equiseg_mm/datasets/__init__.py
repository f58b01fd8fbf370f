from . import transforms  # noqa: F401  (registers the transforms)
from .deliver_dataset import DELIVERDataset
from .multi_modal_seg_dataset import MultiModalSegDataset
from .muses_dataset import MUSESDataset

__all__ = ['DELIVERDataset', 'MUSESDataset', 'MultiModalSegDataset']


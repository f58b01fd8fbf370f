from .checkpoint import UntrustedCheckpointError, load_checkpoint_file
from .misc import sample_desc, unwrap_model
from .modalities import channel_slices, check_modalities, modality_subsets, subset_name
from .seeding import seed_from

__all__ = ['UntrustedCheckpointError', 'channel_slices', 'check_modalities', 'load_checkpoint_file',
           'modality_subsets', 'sample_desc', 'seed_from', 'subset_name', 'unwrap_model']

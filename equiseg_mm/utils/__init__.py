from .checkpoint import UntrustedCheckpointError, load_checkpoint_file
from .misc import sample_desc, unwrap_model
from .modalities import (ModalitySpec, channel_slices, check_names, modality_names,
                         modality_subsets, subset_name)
from .seeding import seed_from

__all__ = ['ModalitySpec', 'UntrustedCheckpointError', 'channel_slices', 'check_names',
           'load_checkpoint_file', 'modality_names', 'modality_subsets', 'sample_desc',
           'seed_from', 'subset_name', 'unwrap_model']

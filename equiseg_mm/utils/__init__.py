from .misc import sample_desc, unwrap_model
from .modalities import channel_slices, check_modalities, modality_subsets, subset_name
from .seeding import seed_from

__all__ = ['channel_slices', 'check_modalities', 'modality_subsets', 'sample_desc', 'seed_from',
           'subset_name', 'unwrap_model']

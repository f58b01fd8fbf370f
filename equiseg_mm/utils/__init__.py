from .modalities import channel_slices, check_modalities, modality_subsets, subset_name

__all__ = ['channel_slices', 'check_modalities', 'modality_subsets', 'subset_name']

from .multi_modal_mit import MultiModalMiT, convert_segformer_mit_keys

__all__ = ['MultiModalMiT', 'convert_segformer_mit_keys']

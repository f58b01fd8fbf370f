from .backbones import MultiModalMiT, convert_segformer_mit_keys
from .data_preprocessor import (MultiModalSegDataPreProcessor, get_multimodal_preprocessor,
                                is_multimodal_preprocessor)
from .heads import SGMHead
from .necks import CMTBNeck
from .segmentors import MultiModalEncoderDecoder
from .utils import enable_fast_path, reuse_branch_outputs

__all__ = [
    'CMTBNeck', 'MultiModalEncoderDecoder', 'MultiModalMiT', 'MultiModalSegDataPreProcessor',
    'SGMHead', 'convert_segformer_mit_keys', 'enable_fast_path', 'get_multimodal_preprocessor',
    'is_multimodal_preprocessor', 'reuse_branch_outputs'
]

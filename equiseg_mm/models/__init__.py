from .backbones import MultiModalMiT, convert_segformer_mit_keys, use_fast_attention
from .data_preprocessor import (MultiModalSegDataPreProcessor, get_multimodal_preprocessor,
                                is_multimodal_preprocessor)
from .heads import FastSegformerHead, SGMHead
from .necks import CMTBNeck
from .utils import use_channels_last

__all__ = [
    'CMTBNeck', 'FastSegformerHead', 'MultiModalMiT', 'MultiModalSegDataPreProcessor', 'SGMHead',
    'convert_segformer_mit_keys', 'get_multimodal_preprocessor', 'is_multimodal_preprocessor',
    'use_channels_last', 'use_fast_attention'
]

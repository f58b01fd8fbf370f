from .fast_segformer_head import FastSegformerHead
from .sgm_head import SGMHead

__all__ = ['FastSegformerHead', 'SGMHead']

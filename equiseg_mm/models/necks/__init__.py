from .cmtb_neck import CMTBNeck

__all__ = ['CMTBNeck']

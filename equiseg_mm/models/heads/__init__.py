from .sgm_head import SGMHead

__all__ = ['SGMHead']

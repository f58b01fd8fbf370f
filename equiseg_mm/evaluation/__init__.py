from .metrics import ModalityBalanceMetric

__all__ = ['ModalityBalanceMetric']

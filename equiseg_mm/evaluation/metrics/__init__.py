from .modality_balance_metric import ModalityBalanceMetric

__all__ = ['ModalityBalanceMetric']

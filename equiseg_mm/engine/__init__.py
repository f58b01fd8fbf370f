from .finite_loss_hook import FiniteLossHook
from .missing_modality_test_loop import MissingModalityTestLoop

__all__ = ['FiniteLossHook', 'MissingModalityTestLoop']

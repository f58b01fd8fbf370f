from .class_order_hook import ClassOrderHook
from .finite_loss_hook import FiniteLossHook
from .missing_modality_test_loop import MissingModalityTestLoop
from .multi_modal_visualization_hook import MultiModalVisualizationHook
from .progress_hook import ProgressHook
from .rng_state_hook import RNGStateHook

__all__ = ['ClassOrderHook', 'FiniteLossHook', 'MissingModalityTestLoop', 'MultiModalVisualizationHook',
           'ProgressHook', 'RNGStateHook']

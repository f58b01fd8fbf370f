from .inference import inference_multimodal, init_multimodal_model, save_prediction
from .robustness import evaluate_robustness

__all__ = ['evaluate_robustness', 'inference_multimodal', 'init_multimodal_model',
           'save_prediction']

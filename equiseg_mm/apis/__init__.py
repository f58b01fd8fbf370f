from .config_utils import common_arguments, prepare_config, runner_from_config
from .inference import (inference_multimodal, init_multimodal_model, missing_modalities,
                        save_prediction)

__all__ = [
    'common_arguments', 'prepare_config', 'runner_from_config', 'inference_multimodal',
    'init_multimodal_model', 'missing_modalities', 'save_prediction'
]

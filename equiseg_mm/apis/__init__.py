from .config_utils import (check_amp_device, common_arguments, prepare_config,
                           runner_from_config)
from .experiment import build_quiet_runner, scale_schedule, train_and_test
from .inference import (inference_multimodal, init_multimodal_model, missing_modalities,
                        save_prediction)

__all__ = [
    'build_quiet_runner', 'check_amp_device', 'common_arguments',
    'inference_multimodal', 'init_multimodal_model', 'missing_modalities', 'prepare_config',
    'runner_from_config', 'save_prediction', 'scale_schedule', 'train_and_test'
]

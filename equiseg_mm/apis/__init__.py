from .config_utils import common_arguments, prepare_config, runner_from_config

__all__ = ['common_arguments', 'prepare_config', 'runner_from_config']

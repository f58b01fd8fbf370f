"""Small helpers shared by the data pipeline and the model-facing APIs."""
import torch
from mmengine.model import is_model_wrapper


def sample_desc(results: dict) -> str:
    """How errors name a sample: ``"sample <sample_idx> (<sample_name or img_path>)"``."""
    name = results.get('sample_name') or results.get('img_path')
    return f"sample {results.get('sample_idx', '?')} ({name})"


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a wrapper (e.g. DDP), or ``model`` itself when it is not wrapped."""
    return model.module if is_model_wrapper(model) else model

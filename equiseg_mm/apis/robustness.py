"""Robustness evaluation of a trained model under missing modalities."""
import copy
from pathlib import Path
from typing import Optional, Union

from mmengine.config import Config

from ..utils.checkpoint import load_checkpoint


def evaluate_robustness(config: Union[str, Path, Config],
                        checkpoint: str,
                        work_dir: str,
                        cfg_options: Optional[dict] = None,
                        backend: Optional[str] = None,
                        **loop_options) -> dict:
    """Evaluate a checkpoint on the config's test set with
    :class:`~equiseg_mm.engine.MissingModalityTestLoop`, as ``tools/test.py`` does.

    The config's ``test_cfg`` is kept when it is that loop, else replaced by it; ``loop_options``
    (e.g. ``subsets=[['rgb'], ['depth']]``, ``rmm_ratios=(0.5, )``) update it. The checkpoint is
    loaded with :func:`~equiseg_mm.utils.checkpoint.load_checkpoint`; the robustness report
    (JSON, Markdown, PNG) goes to the run folder under ``work_dir``. An exported model (a
    ``.onnx`` file, backend 'onnxruntime') is evaluated the same way: the config's model is
    replaced by an :class:`~equiseg_mm.deploy.ORTSegmentor` of the file (onnxruntime on the
    CPU, the config's data preprocessor) and the report is the same.

    Args:
        config (str | Path | Config): Config file or object (a Config is copied, not changed).
        checkpoint (str): Checkpoint file, or a ``.onnx`` file.
        work_dir (str): Where the runner writes its log and the report.
        cfg_options (dict, optional): Config overrides, as ``--cfg-options``. Defaults to None.
        backend (str, optional): 'pytorch' or 'onnxruntime'. Defaults to None (by the
            checkpoint's extension).
        **loop_options: Arguments of the test loop.

    Returns:
        dict: The test metrics (``mm/mIoU``, ``mm/EMM_avg``, ...) as floats.
    """
    from mmengine.runner import Runner
    from .inference import resolve_backend
    cfg = Config.fromfile(str(config)) if isinstance(config, (str, Path)) else copy.deepcopy(config)
    onnx = resolve_backend(checkpoint, backend) == 'onnxruntime'
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if onnx:
        cfg.model = dict(type='ORTSegmentor', onnx_file=str(checkpoint),
                         data_preprocessor=cfg.model.data_preprocessor)
    test_cfg = dict(cfg.get('test_cfg') or {})
    if test_cfg.get('type') != 'MissingModalityTestLoop':
        test_cfg = dict(type='MissingModalityTestLoop')
    cfg.test_cfg = dict(test_cfg, **loop_options)
    cfg.update(work_dir=str(work_dir), load_from=None, resume=False)
    runner = Runner.from_cfg(cfg)
    if not onnx:
        load_checkpoint(runner.model, str(checkpoint), map_location='cpu')
    return {k: float(v) for k, v in runner.test().items()}

"""Hook that draws per-modality panels of the first validation/test samples."""
import os.path as osp
from typing import Optional, Sequence, Tuple

from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from ..visualization import visualize_modalities

_PHASES = ('val', 'test')


@HOOKS.register_module()
class MultiModalVisualizationHook(Hook):
    """After a validation or test run, draw one panel per sample for the first samples.

    Each panel (see :func:`~equiseg_mm.visualization.draw_modality_panel`) shows every input
    modality, the ground truth, the prediction with all modalities and the prediction with each
    single modality missing, so one look tells which sensor the model leans on. The samples are
    read again from the loop's dataset after the loop (the first ``num_samples``, whatever the
    batch size), and predicted with the model's data preprocessor as configured, one missing
    modality at a time; its settings are restored afterwards. Files go to
    ``<work_dir>/<timestamp>/vis_modalities/`` (``runner.log_dir``), named
    ``test_<index>_<stem>.png`` or ``val_iter<iter>_<index>_<stem>.png``. Only the main process
    draws.

    Use it from a config::

        custom_hooks = [dict(type='MultiModalVisualizationHook', num_samples=4)]

    Args:
        num_samples (int): Samples per run, from the first. Defaults to 4.
        phases (Sequence[str]): When to draw, of 'val' and 'test'. Defaults to ('val', 'test').
        out_dir_name (str): Folder name under ``runner.log_dir``. Defaults to 'vis_modalities'.
        opacity (float): Palette weight of the label tiles in (0, 1]; 1.0 paints the palette
            alone, less blends it on the RGB modality. Defaults to 1.0.
        tile_width (tuple[int, int]): Smallest and largest tile width in pixels.
            Defaults to (224, 512).
    """

    priority = 'LOW'

    def __init__(self,
                 num_samples: int = 4,
                 phases: Sequence[str] = _PHASES,
                 out_dir_name: str = 'vis_modalities',
                 opacity: float = 1.0,
                 tile_width: Tuple[int, int] = (224, 512)) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f'num_samples must be a positive int, got {num_samples!r}')
        phases = (phases, ) if isinstance(phases, str) else tuple(phases)
        unknown = [p for p in phases if p not in _PHASES]
        if unknown or not phases:
            raise ValueError(f'phases must be a non-empty subset of {list(_PHASES)}, got '
                             f'{list(phases)}')
        if not 0.0 < float(opacity) <= 1.0:
            raise ValueError(f'opacity must be in (0, 1], got {opacity!r}')
        if len(tile_width) != 2 or not 0 < tile_width[0] <= tile_width[1]:
            raise ValueError(f'tile_width must be (smallest, largest) with 0 < smallest <= '
                             f'largest, got {tile_width!r}')
        self.num_samples = num_samples
        self.phases = phases
        self.out_dir_name = out_dir_name
        self.opacity = float(opacity)
        self.tile_width = (int(tile_width[0]), int(tile_width[1]))

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        """Draw the panels of the first validation samples."""
        if 'val' in self.phases:
            self._draw(runner, runner.val_loop.dataloader.dataset, f'val_iter{runner.iter}_')

    def after_test_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        """Draw the panels of the first test samples."""
        if 'test' in self.phases:
            self._draw(runner, runner.test_loop.dataloader.dataset, 'test_')

    @master_only
    def _draw(self, runner, dataset, prefix: str) -> None:
        out_dir = osp.join(runner.log_dir, self.out_dir_name)
        written = visualize_modalities(runner.model, dataset, out_dir,
                                       num_samples=self.num_samples, opacity=self.opacity,
                                       prefix=prefix, tile_width=self.tile_width)
        print_log(f'MultiModalVisualizationHook: {len(written)} modality panels in {out_dir}',
                  logger='current')

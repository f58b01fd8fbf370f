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
    """After a validation or test run, draw the panels of the first samples of its dataset
    (:func:`~equiseg_mm.visualization.visualize_modalities`) on the main process.

    Args:
        num_samples (int): Samples per run, from the first. Defaults to 4.
        phases (Sequence[str]): When to draw, of 'val' and 'test'. Defaults to ('val', 'test').
        out_dir_name (str): Folder name under ``runner.log_dir``. Defaults to 'vis_modalities'.
        opacity (float): Palette weight of the label tiles in (0, 1]. Defaults to 1.0.
        tile_width (tuple[int, int]): Smallest and largest tile width. Defaults to (224, 512).
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
        if not phases or any(p not in _PHASES for p in phases):
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
        if 'val' in self.phases:
            self._draw(runner, runner.val_loop.dataloader.dataset, f'val_iter{runner.iter}_')

    def after_test_epoch(self, runner, metrics: Optional[dict] = None) -> None:
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

"""MUSES (ETH, 2024): frame camera, event camera, lidar and radar in adverse conditions."""
from typing import Dict, List, Optional, Sequence

from mmseg.datasets import CityscapesDataset
from mmseg.registry import DATASETS

from .multi_modal_seg_dataset import MultiModalSegDataset


@DATASETS.register_module()
class MUSESDataset(MultiModalSegDataset):
    """The MUSES dataset: 19 Cityscapes train-id classes under four weathers, day and night.

    Files: ``muses/<modality_dir>/<split>/<weather>/<day|night>/<name><suffix>``. Event camera,
    lidar and radar must be projected to the frame camera (e.g. with the MUSES SDK) first; set
    ``modality_dirs`` / ``modality_suffixes`` to what the projection wrote. The test split has
    no labels (``data_prefix=dict()``). Data infos add ``condition`` and ``time_of_day``.

    Args:
        split (str): 'train', 'val' or 'test'. Defaults to 'train'.
        weathers (Sequence[str], optional): Weathers to keep (None: all). Defaults to None.
        times_of_day (Sequence[str], optional): Times to keep (None: both). Defaults to None.
        modalities (Sequence[str]): Stacking order. Defaults to ('rgb', 'event', 'lidar').
        modality_dirs (dict, optional): Merged over ``DEFAULT_MODALITY_DIRS``. Defaults to None.
        modality_suffixes (dict, optional): Merged over ``DEFAULT_MODALITY_SUFFIXES``.
            Defaults to None.
        seg_map_suffix (str): Label suffix. Defaults to '_gt_labelTrainIds.png'.
        data_prefix (dict): Label folder. Defaults to ``dict(seg_map_path='gt_semantic')``.
        **kwargs: Other arguments of :class:`MultiModalSegDataset`.

    Raises:
        ValueError: Unknown split, weather, time of day or modality, or no sample matches.
    """
    METAINFO = dict(classes=CityscapesDataset.METAINFO['classes'],
                    palette=CityscapesDataset.METAINFO['palette'])
    SPLITS = ('train', 'val', 'test')
    WEATHERS = ('clear', 'fog', 'rain', 'snow')
    TIMES_OF_DAY = ('day', 'night')
    DEFAULT_MODALITY_DIRS = dict(rgb='frame_camera', event='event_camera', lidar='lidar',
                                 radar='radar')
    DEFAULT_MODALITY_SUFFIXES = dict(rgb='_frame_camera.png', event='_event_camera.png',
                                     lidar='_lidar.png', radar='_radar.png')

    def __init__(self,
                 split: str = 'train',
                 weathers: Optional[Sequence[str]] = None,
                 times_of_day: Optional[Sequence[str]] = None,
                 modalities: Sequence[str] = ('rgb', 'event', 'lidar'),
                 modality_dirs: Optional[Dict[str, str]] = None,
                 modality_suffixes: Optional[Dict[str, str]] = None,
                 seg_map_suffix: str = '_gt_labelTrainIds.png',
                 data_prefix: dict = dict(seg_map_path='gt_semantic'),
                 **kwargs) -> None:
        self.split = self._checked([split], self.SPLITS, 'split')[0]
        self.weathers = self._checked(weathers, self.WEATHERS, 'weather')
        self.times_of_day = self._checked(times_of_day, self.TIMES_OF_DAY, 'time of day')
        super().__init__(
            modalities=modalities,
            modality_dirs=modality_dirs,
            modality_suffixes=modality_suffixes,
            seg_map_suffix=seg_map_suffix,
            data_prefix=data_prefix,
            **kwargs)

    def _scan_subdirs(self) -> List[str]:
        return [f'{self.split}/{weather}/{time}'
                for weather in self.weathers for time in self.times_of_day]

    def _parse_sample(self, name: str) -> Optional[dict]:
        parts = name.split('/')
        if (len(parts) < 4 or parts[0] != self.split or parts[1] not in self.weathers
                or parts[2] not in self.times_of_day):
            return None
        return dict(condition=parts[1], time_of_day=parts[2])

    def _filter_description(self) -> str:
        return (f'split={self.split!r}, weathers={list(self.weathers)}, '
                f'times_of_day={list(self.times_of_day)}')

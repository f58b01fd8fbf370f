"""MUSES (ETH, 2024): frame camera, event camera, lidar and radar in adverse conditions."""
from typing import Dict, List, Optional, Sequence

from mmseg.datasets import CityscapesDataset
from mmseg.registry import DATASETS

from ..utils import check_modalities
from .multi_modal_seg_dataset import MultiModalSegDataset


@DATASETS.register_module()
class MUSESDataset(MultiModalSegDataset):
    """The MUSES dataset: 19 Cityscapes train-id classes under four weathers, day and night.

    The event camera, lidar and radar must first be projected to the 1920x1080 frame-camera
    image (e.g. with the MUSES SDK) and saved as images or ``.npz`` arrays. Assumed layout
    (``data_root`` is the ``muses`` folder); every folder and name token is configurable:

    .. code-block:: none

        muses/frame_camera/<split>/<weather>/<day|night>/<name>_frame_camera.png
        muses/gt_semantic/<split>/<weather>/<day|night>/<name>_gt_labelTrainIds.png
        muses/<modality_dir>/<split>/<weather>/<day|night>/<name>_<token>.png  (or .npz)

    The frame-camera and label folders follow the released dataset; the folders and suffixes
    of the *projected* modalities are this plugin's assumption (defaults: ``event_camera/``
    ``*_event_camera.png``, ``lidar/`` ``*_lidar.png``, ``radar/`` ``*_radar.png``): set
    ``modality_dirs`` / ``modality_suffixes`` to what your projection wrote, e.g.
    ``modality_suffixes=dict(lidar='_lidar.npz')``.

    Labels are Cityscapes train ids 0..18; 255 is ignored and never mapped to a class. The
    test split has no public labels: pass ``data_prefix=dict()`` for unlabelled data.

    Each data info adds ``condition`` (the weather) and ``time_of_day`` to those of
    :class:`MultiModalSegDataset`.

    Args:
        split (str): 'train', 'val' or 'test'. Defaults to 'train'.
        weathers (Sequence[str], optional): Weathers to keep (clear, fog, rain, snow); None
            keeps all. Defaults to None.
        times_of_day (Sequence[str], optional): 'day' and/or 'night'; None keeps both.
            Defaults to None.
        modalities (Sequence[str]): Modalities in stacking order; the first is scanned.
            Defaults to ('rgb', 'event', 'lidar'); add 'radar' for the fourth sensor.
        modality_dirs (dict[str, str], optional): Folder per modality, merged over
            ``dict(rgb='frame_camera', event='event_camera', lidar='lidar', radar='radar')``.
            Defaults to None.
        modality_suffixes (dict[str, str], optional): Suffix per modality, merged over
            ``dict(rgb='_frame_camera.png', event='_event_camera.png', lidar='_lidar.png',
            radar='_radar.png')``. Defaults to None.
        seg_map_suffix (str): Label suffix. Defaults to '_gt_labelTrainIds.png'.
        data_prefix (dict): ``seg_map_path`` is the label folder. Defaults to
            ``dict(seg_map_path='gt_semantic')``.
        **kwargs: Other arguments of :class:`MultiModalSegDataset` (``data_root``,
            ``pipeline``, ``check_files``, ``metainfo``, ...).

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
        check_modalities([split], self.SPLITS, what='split')
        self.split = split
        self.weathers = tuple(self.WEATHERS if weathers is None else weathers)
        check_modalities(self.weathers, self.WEATHERS, what='weather')
        self.times_of_day = tuple(self.TIMES_OF_DAY if times_of_day is None else times_of_day)
        check_modalities(self.times_of_day, self.TIMES_OF_DAY, what='time of day')
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

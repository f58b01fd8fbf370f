"""DeLiVER (CMNeXt, CVPR 2023): RGB, depth, event and lidar in CARLA, with sensor failures."""
from typing import Dict, List, Optional, Sequence

from mmseg.registry import DATASETS

from ..utils import check_modalities
from .multi_modal_seg_dataset import MultiModalSegDataset


@DATASETS.register_module()
class DELIVERDataset(MultiModalSegDataset):
    """The DeLiVER dataset: 25 classes, five conditions, five sensor-failure cases.

    Layout (``data_root`` is the ``DELIVER`` folder):

    .. code-block:: none

        DELIVER/{img,hha,depth,event,lidar,semantic}/{cloud,fog,night,rain,sun}/{train,val,test}/
            <sequence>/<frame>_<modality>_front.png

    e.g. ``img/cloud/train/MAP_10_point102/045050_rgb_front.png``,
    ``hha/cloud/train/MAP_10_point102/045050_depth_front.png`` and
    ``semantic/cloud/train/MAP_10_point102/045050_semantic_front.png``. The other modalities'
    paths come from the RGB path by replacing the folder and the ``_rgb`` token (as the CMNeXt
    reference loader does). Depth is read from ``hha/`` by default, like that loader; pass
    ``modality_dirs=dict(depth='depth')`` for the raw depth maps.

    Labels are channel 0 of the semantic PNG (see :class:`LoadMultiModalAnnotations`): raw
    1..25 are classes 0..24 and raw 0 and 255 are ignored (255). mmseg's
    ``reduce_zero_label=True`` does exactly this (0 -> 255, v -> v - 1, 255 stays 255), so it is
    the default here.

    Sensor-failure cases: a sample's ``case`` is the first of ``case_names`` that occurs as a
    substring of its path below the split folder (``<sequence>/<frame>_rgb_front.png``), else
    ``'clean'``. The released data's exact naming of the cases is not documented; the
    substring rule follows the CMNeXt loader, which selects a case by ``case in path``.

    Each data info adds ``condition`` (cloud/fog/night/rain/sun) and ``case`` to those of
    :class:`MultiModalSegDataset`.

    Args:
        split (str): 'train', 'val' or 'test'. Defaults to 'train'.
        conditions (Sequence[str], optional): Conditions to keep; None keeps all five.
            Defaults to None.
        cases (Sequence[str], optional): Cases to keep (names of ``case_names`` and/or
            ``'clean'``); None keeps every sample. Defaults to None.
        modalities (Sequence[str]): Modalities in stacking order; the first is scanned.
            Defaults to ('rgb', 'depth', 'event', 'lidar').
        modality_dirs (dict[str, str], optional): Folder per modality, merged over
            ``dict(rgb='img', depth='hha', event='event', lidar='lidar')``. Defaults to None.
        modality_suffixes (dict[str, str], optional): Suffix per modality, merged over
            ``'_<token>_front.png'`` with tokens rgb, depth, event, lidar. Defaults to None.
        case_names (Sequence[str]): Case names searched in the path. Defaults to
            ('motionblur', 'overexposure', 'underexposure', 'lidarjitter', 'eventlowres').
        seg_map_suffix (str): Label suffix. Defaults to '_semantic_front.png'.
        data_prefix (dict): ``seg_map_path`` is the label folder. Defaults to
            ``dict(seg_map_path='semantic')``.
        reduce_zero_label (bool): See above. Defaults to True.
        **kwargs: Other arguments of :class:`MultiModalSegDataset` (``data_root``,
            ``pipeline``, ``check_files``, ``metainfo``, ...).

    Raises:
        ValueError: Unknown split, condition, case or modality, or no sample matches.
    """
    METAINFO = dict(
        classes=('Building', 'Fence', 'Other', 'Pedestrian', 'Pole', 'RoadLine', 'Road',
                 'SideWalk', 'Vegetation', 'Cars', 'Wall', 'TrafficSign', 'Sky', 'Ground',
                 'Bridge', 'RailTrack', 'GroundRail', 'TrafficLight', 'Static', 'Dynamic',
                 'Water', 'Terrain', 'TwoWheeler', 'Bus', 'Truck'),
        palette=[[70, 70, 70], [100, 40, 40], [55, 90, 80], [220, 20, 60], [153, 153, 153],
                 [157, 234, 50], [128, 64, 128], [244, 35, 232], [107, 142, 35], [0, 0, 142],
                 [102, 102, 156], [220, 220, 0], [70, 130, 180], [81, 0, 81], [150, 100, 100],
                 [230, 150, 140], [180, 165, 180], [250, 170, 30], [110, 190, 160],
                 [170, 120, 50], [45, 60, 150], [145, 170, 100], [0, 0, 230], [0, 60, 100],
                 [0, 0, 70]])
    SPLITS = ('train', 'val', 'test')
    CONDITIONS = ('cloud', 'fog', 'night', 'rain', 'sun')
    CASES = ('motionblur', 'overexposure', 'underexposure', 'lidarjitter', 'eventlowres')
    DEFAULT_MODALITY_DIRS = dict(rgb='img', depth='hha', event='event', lidar='lidar')
    DEFAULT_MODALITY_SUFFIXES = dict(rgb='_rgb_front.png', depth='_depth_front.png',
                                     event='_event_front.png', lidar='_lidar_front.png')

    def __init__(self,
                 split: str = 'train',
                 conditions: Optional[Sequence[str]] = None,
                 cases: Optional[Sequence[str]] = None,
                 modalities: Sequence[str] = ('rgb', 'depth', 'event', 'lidar'),
                 modality_dirs: Optional[Dict[str, str]] = None,
                 modality_suffixes: Optional[Dict[str, str]] = None,
                 case_names: Sequence[str] = CASES,
                 seg_map_suffix: str = '_semantic_front.png',
                 data_prefix: dict = dict(seg_map_path='semantic'),
                 reduce_zero_label: bool = True,
                 **kwargs) -> None:
        check_modalities([split], self.SPLITS, what='split')
        self.split = split
        self.conditions = tuple(self.CONDITIONS if conditions is None else conditions)
        check_modalities(self.conditions, self.CONDITIONS, what='condition')
        self.case_names = tuple(case_names)
        self.cases = None if cases is None else tuple(cases)
        if self.cases is not None:
            check_modalities(self.cases, self.case_names + ('clean', ), what='case')
        super().__init__(
            modalities=modalities,
            modality_dirs=modality_dirs,
            modality_suffixes=modality_suffixes,
            seg_map_suffix=seg_map_suffix,
            data_prefix=data_prefix,
            reduce_zero_label=reduce_zero_label,
            **kwargs)

    def _scan_subdirs(self) -> List[str]:
        return [f'{condition}/{self.split}' for condition in self.conditions]

    def _parse_sample(self, name: str) -> Optional[dict]:
        parts = name.split('/')
        if len(parts) < 3 or parts[0] not in self.conditions or parts[1] != self.split:
            return None
        below_split = '/'.join(parts[2:])
        case = next((c for c in self.case_names if c in below_split), 'clean')
        if self.cases is not None and case not in self.cases:
            return None
        return dict(condition=parts[0], case=case)

    def _filter_description(self) -> str:
        return (f'split={self.split!r}, conditions={list(self.conditions)}, '
                f'cases={"all" if self.cases is None else list(self.cases)}')

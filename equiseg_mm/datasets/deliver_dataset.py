"""DeLiVER (CMNeXt, CVPR 2023): RGB, depth, event and lidar in CARLA, with sensor failures."""
from typing import Dict, List, Optional, Sequence

from mmseg.registry import DATASETS

from .multi_modal_seg_dataset import MultiModalSegDataset


@DATASETS.register_module()
class DELIVERDataset(MultiModalSegDataset):
    """The DeLiVER dataset: 25 classes, five conditions, five sensor-failure cases.

    Files: ``DELIVER/<modality_dir>/<condition>/<split>/<sequence>/<frame>_<modality>_front.png``;
    depth is read from ``hha/`` as in the CMNeXt loader (``modality_dirs=dict(depth='depth')``
    for raw depth). Data infos add ``condition`` and ``case``: the first of ``case_names`` in
    the path below the split folder, else ``'clean'`` (the CMNeXt loader's rule).

    Args:
        split (str): 'train', 'val' or 'test'. Defaults to 'train'.
        conditions (Sequence[str], optional): Conditions to keep (None: all). Defaults to None.
        cases (Sequence[str], optional): Cases to keep, of ``case_names`` and 'clean' (None:
            all). Defaults to None.
        modalities (Sequence[str]): Stacking order. Defaults to ('rgb', 'depth', 'event', 'lidar').
        modality_dirs (dict, optional): Merged over ``DEFAULT_MODALITY_DIRS``. Defaults to None.
        modality_suffixes (dict, optional): Merged over ``DEFAULT_MODALITY_SUFFIXES``.
            Defaults to None.
        case_names (Sequence[str]): Case names searched in the path. Defaults to ``CASES``.
        seg_map_suffix (str): Label suffix. Defaults to '_semantic_front.png'.
        data_prefix (dict): Label folder. Defaults to ``dict(seg_map_path='semantic')``.
        reduce_zero_label (bool): Whether raw 0 is ignored and v is v - 1. Defaults to True.
        **kwargs: Other arguments of :class:`MultiModalSegDataset`.

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
        self.split = self._checked([split], self.SPLITS, 'split')[0]
        self.conditions = self._checked(conditions, self.CONDITIONS, 'condition')
        self.case_names = tuple(case_names)
        self.cases = None if cases is None else self._checked(
            cases, self.case_names + ('clean', ), 'case')
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

"""A semantic segmentation dataset whose samples have one file per modality."""
import os.path as osp
from typing import Dict, List, Optional, Sequence

import mmengine
import mmengine.fileio as fileio
from mmengine.utils import is_abs

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from ..utils import check_names, modality_names

_MAX_LISTED = 5


@DATASETS.register_module()
class MultiModalSegDataset(BaseSegDataset):
    """Segmentation dataset for any folder-per-modality layout.

    Files are ``<modality_dirs[m]>/<name><modality_suffixes[m]>``, labels
    ``<data_prefix['seg_map_path']>/<name><seg_map_suffix>``; the names come from ``ann_file``
    or a recursive scan of the first modality's folder. Data infos hold ``img_path`` (the first
    modality's file), ``modality_paths``, ``sample_name`` and ``seg_map_path`` (if labelled).
    Subclasses restrict the scan with :meth:`_scan_subdirs` and filter with :meth:`_parse_sample`.

    Args:
        modalities (Sequence[str]): Modality names in stacking order; the first is scanned.
        modality_dirs (dict[str, str], optional): Folder of each modality, relative to
            ``data_root`` (or absolute), merged over ``DEFAULT_MODALITY_DIRS``. Defaults to None.
        modality_suffixes (dict[str, str], optional): Suffix of each modality. Defaults to None.
        check_files (bool): Check at construction that every file exists. Defaults to True.
        img_suffix (str): Suffix of modalities not in ``modality_suffixes``. Defaults to '.png'.
        seg_map_suffix (str): Suffix of the label files. Defaults to '.png'.
        data_prefix (dict): ``seg_map_path``, the label folder (none: unlabelled); an ``img_path``
            must be the first modality's folder. Defaults to ``dict(seg_map_path='')``.
        metainfo (dict, optional): Classes and palette (else ``METAINFO``). Defaults to None.
        **kwargs: Other arguments of :class:`mmseg.datasets.BaseSegDataset`.

    Raises:
        ValueError: A modality has no folder or repeats, no ``classes``, or no sample matches.
        FileNotFoundError: With ``check_files``, a modality file or label is missing.
    """
    METAINFO: dict = dict()
    DEFAULT_MODALITY_DIRS: Dict[str, str] = dict()
    DEFAULT_MODALITY_SUFFIXES: Dict[str, str] = dict()

    def __init__(self,
                 modalities: Sequence[str],
                 modality_dirs: Optional[Dict[str, str]] = None,
                 modality_suffixes: Optional[Dict[str, str]] = None,
                 check_files: bool = True,
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '.png',
                 data_prefix: dict = dict(seg_map_path=''),
                 metainfo: Optional[dict] = None,
                 **kwargs) -> None:
        self.modalities = modality_names(modalities)
        self.modality_dirs = {**self.DEFAULT_MODALITY_DIRS, **(modality_dirs or {})}
        check_names(self.modalities, list(self.modality_dirs), 'modality (not in modality_dirs)')
        suffixes = {**self.DEFAULT_MODALITY_SUFFIXES, **(modality_suffixes or {})}
        self.modality_suffixes = {m: suffixes.get(m, img_suffix) for m in self.modalities}
        self.check_files = check_files

        primary = self.modalities[0]
        data_prefix = dict(data_prefix)
        given_img_dir = data_prefix.get('img_path')
        if given_img_dir and given_img_dir != self.modality_dirs[primary]:
            raise ValueError(
                f"data_prefix['img_path']={given_img_dir!r} conflicts with "
                f'modality_dirs[{primary!r}]={self.modality_dirs[primary]!r}; set the folder of '
                f'the primary modality in modality_dirs only')
        data_prefix['img_path'] = self.modality_dirs[primary]
        metainfo = dict(metainfo or {}, modalities=self.modalities)
        super().__init__(
            img_suffix=self.modality_suffixes[primary],
            seg_map_suffix=seg_map_suffix,
            data_prefix=data_prefix,
            metainfo=metainfo,
            **kwargs)

    def _scan_subdirs(self) -> List[str]:
        """Sub-folders of the primary modality's folder to scan; ``''`` scans all of it."""
        return ['']

    def _parse_sample(self, name: str) -> Optional[dict]:
        """Extra data-info keys of sample ``name`` ('/'-separated), or None to filter it out."""
        return {}

    def _filter_description(self) -> str:
        """The active filters, for the error raised when no sample matches."""
        return 'no filters'

    @staticmethod
    def _checked(values: Optional[Sequence[str]], allowed: Sequence[str], what: str) -> tuple:
        """``values`` (None: all of ``allowed``) as a tuple, each checked to be in ``allowed``."""
        values = tuple(allowed if values is None else values)
        check_names(values, allowed, what)
        return values

    def _modality_dir(self, modality: str) -> str:
        folder = self.modality_dirs[modality]
        if self.data_root and not is_abs(folder):
            return fileio.join_path(self.data_root, folder)
        return folder

    def _sample_names(self, img_dir: str) -> List[str]:
        if self.ann_file:
            if not osp.isfile(self.ann_file):
                raise FileNotFoundError(f'ann_file {self.ann_file} does not exist; give a file '
                                        f'with one sample name per line, or ann_file=""')
            lines = mmengine.list_from_file(self.ann_file, backend_args=self.backend_args)
            return [line.strip() for line in lines if line.strip()]
        suffix = self.modality_suffixes[self.modalities[0]]
        names = []
        for sub in self._scan_subdirs():
            folder = osp.join(img_dir, sub) if sub else img_dir
            if not fileio.isdir(folder, backend_args=self.backend_args):
                continue
            for rel in fileio.list_dir_or_file(
                    folder, list_dir=False, suffix=suffix, recursive=True,
                    backend_args=self.backend_args):
                rel = rel.replace(osp.sep, '/')
                names.append(f'{sub}/{rel}' if sub else rel)
        return sorted(name[:-len(suffix)] for name in names)

    def load_data_list(self) -> List[dict]:
        """Scan the primary modality's folder (or read ``ann_file``) into data infos.

        Returns:
            list[dict]: One data info per sample, sorted by sample name.
        """
        classes = self._metainfo.get('classes')
        if not classes:
            raise ValueError(f"{type(self).__name__} needs metainfo=dict(classes=[...], "
                             f"palette=[...]); got metainfo {self._metainfo}")
        primary = self.modalities[0]
        img_dir = self.data_prefix['img_path']
        ann_dir = self.data_prefix.get('seg_map_path')
        data_list = []
        for name in self._sample_names(img_dir):
            extra = self._parse_sample(name)
            if extra is None:
                continue
            modality_paths = {
                m: osp.join(img_dir if m == primary else self._modality_dir(m),
                            name + self.modality_suffixes[m])
                for m in self.modalities
            }
            data_info = dict(img_path=modality_paths[primary], modality_paths=modality_paths)
            if ann_dir is not None:
                data_info['seg_map_path'] = osp.join(ann_dir, name + self.seg_map_suffix)
            data_info.update(
                sample_name=name,
                num_classes=len(classes),
                label_map=self.label_map,
                reduce_zero_label=self.reduce_zero_label,
                seg_fields=[],
                **extra)
            data_list.append(data_info)
        if not data_list:
            source = f'ann_file {self.ann_file}' if self.ann_file else (
                f'folder {img_dir} (sub-folders {self._scan_subdirs()}, files ending in '
                f'{self.modality_suffixes[primary]!r})')
            raise ValueError(f'{type(self).__name__} found no sample in {source} with '
                             f'{self._filter_description()}; check data_root, modality_dirs, '
                             f'modality_suffixes and the filters')
        if self.check_files:
            self._check_files(data_list)
        return data_list

    def _check_files(self, data_list: List[dict]) -> None:
        missing = []
        for idx, info in enumerate(data_list):
            paths = list(info['modality_paths'].items())
            if 'seg_map_path' in info:
                paths.append(('label', info['seg_map_path']))
            for what, path in paths:
                if not fileio.exists(path, backend_args=self.backend_args):
                    missing.append((idx, info['sample_name'], what, path))
        if missing:
            listed = '; '.join(f'sample {idx} {name!r}: no {what} file {path}'
                               for idx, name, what, path in missing[:_MAX_LISTED])
            raise FileNotFoundError(
                f'{type(self).__name__}: {len(missing)} missing file(s) in {len(data_list)} '
                f'samples: {listed}. Fix modality_dirs / modality_suffixes / seg_map_suffix, '
                f'restore the files, or pass check_files=False to defer the error to loading.')

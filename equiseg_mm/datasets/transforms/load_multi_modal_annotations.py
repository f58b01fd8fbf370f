"""mmseg's ``LoadAnnotations`` for colour label PNGs, with label-file and label-range checks."""
from typing import Optional

import cv2
import mmcv
import mmengine.fileio as fileio
import numpy as np

from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

from ...utils import sample_desc

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_EIGHT_BIT = ('label maps must be 8-bit (mmseg casts them to uint8, which would wrap larger '
              'values silently). Convert the file: class ids 0..254, ignore 255')


def _label_lut(reduce_zero_label: bool, label_map: Optional[dict]) -> np.ndarray:
    """mmseg's ``reduce_zero_label`` then ``label_map``, as a 256-entry lookup table."""
    lut = np.arange(256, dtype=np.uint8)
    if reduce_zero_label:  # 0 -> 255, v -> v - 1, 255 stays 255
        lut[0] = 255
        lut = lut - 1
        lut[lut == 254] = 255
    if label_map:
        before = lut.copy()  # every mapping reads the values before any of them (as mmseg)
        for old_id, new_id in label_map.items():
            lut[before == old_id] = new_id
    return lut


@TRANSFORMS.register_module()
class LoadMultiModalAnnotations(LoadAnnotations):
    """Load a label map, keep its channel 0, map it and check the class ids.

    Channel 0 is R of an RGB PNG, as DeLiVER's reference loader reads it. Labels must be 8-bit,
    and below ``results['num_classes']`` or equal to ``ignore_index`` after mapping.

    Required Keys:

    - seg_map_path (str)
    - reduce_zero_label (bool), label_map (dict, optional), seg_fields (list)
    - num_classes (int, optional): without it the range is not checked.

    Added Keys:

    - gt_seg_map (np.uint8): (H, W).
    - seg_fields (list): ``'gt_seg_map'`` appended.

    Args:
        ignore_index (int): The ignored label value. Defaults to 255.
        validate (bool): Check the class-id range. Defaults to True.
        reduce_zero_label (bool, optional): As in mmseg (set it on the dataset). Defaults to None.
        backend_args (dict, optional): mmengine file backend arguments. Defaults to None.
        imdecode_backend (str): Decoder of :func:`mmcv.imfrombytes`. Defaults to 'pillow'.

    Raises:
        FileNotFoundError: The label file is missing (names the sample and the path).
        ValueError: No label file (unlabelled data), an unreadable, non-8-bit or out-of-range
            file, or a ``reduce_zero_label`` other than the dataset's.
    """

    def __init__(self,
                 ignore_index: int = 255,
                 validate: bool = True,
                 reduce_zero_label: Optional[bool] = None,
                 backend_args: Optional[dict] = None,
                 imdecode_backend: str = 'pillow') -> None:
        super().__init__(
            reduce_zero_label=reduce_zero_label,
            backend_args=backend_args,
            imdecode_backend=imdecode_backend)
        self.ignore_index = ignore_index
        self.validate = validate

    def _load_seg_map(self, results: dict) -> None:
        path = results.get('seg_map_path')
        if path is None:
            raise ValueError(f'{sample_desc(results)} has no label file (seg_map_path): the data '
                             f'is unlabelled (e.g. a test split built with data_prefix=dict()); '
                             f'remove LoadMultiModalAnnotations from the pipeline for unlabelled '
                             f'data')
        seg = self._decode(results, path)
        if seg.ndim == 3:
            seg = seg[..., 2] if seg.shape[2] >= 3 else seg[..., 0]
        if seg.dtype == np.bool_:  # 1-bit PNGs through pillow
            seg = seg.astype(np.uint8)  # (not a view: pillow may store True as 255)
        elif seg.dtype != np.uint8:
            raise ValueError(f'{sample_desc(results)}: the label file {path} decodes to '
                             f'{seg.dtype} (values {seg.min()}..{seg.max()}); {_EIGHT_BIT}')

        if self.reduce_zero_label is None:
            self.reduce_zero_label = results['reduce_zero_label']
        if self.reduce_zero_label != results['reduce_zero_label']:
            raise ValueError(f'the dataset sets reduce_zero_label={results["reduce_zero_label"]} '
                             f'but LoadMultiModalAnnotations has reduce_zero_label='
                             f'{self.reduce_zero_label}; set it on the dataset only')
        label_map = results.get('label_map')
        if self.reduce_zero_label or label_map:
            seg = _label_lut(self.reduce_zero_label, label_map)[seg]
        seg = np.ascontiguousarray(seg)
        results['gt_seg_map'] = seg
        results['seg_fields'].append('gt_seg_map')
        if not self.validate or results.get('num_classes') is None:
            return
        num_classes = int(results['num_classes'])
        values = np.flatnonzero(np.bincount(seg.ravel(), minlength=256))  # uint8: fast unique
        bad = values[(values >= num_classes) & (values != self.ignore_index)]
        if bad.size:
            raise ValueError(
                f'{sample_desc(results)}: the label file {path} holds values '
                f'{bad.tolist()} after reduce_zero_label={results.get("reduce_zero_label")} '
                f'and label_map; expected class ids 0..{num_classes - 1} or ignore '
                f'{self.ignore_index}. Check the label files and reduce_zero_label')

    def _decode(self, results: dict, path: str) -> np.ndarray:
        try:
            content = fileio.get(path, backend_args=self.backend_args)
        except FileNotFoundError:
            raise FileNotFoundError(f'{sample_desc(results)}: the label file {path} does not '
                                    f'exist') from None
        if content[:8] == _PNG_SIGNATURE and content[12:16] == b'IHDR' and len(content) > 24 \
                and content[24] > 8:  # IHDR bit depth: pillow would truncate 16-bit colour
            raise ValueError(f'{sample_desc(results)}: the label file {path} is a '
                             f'{content[24]}-bit PNG; {_EIGHT_BIT}')
        try:
            seg, reason = mmcv.imfrombytes(content, flag='unchanged',
                                           backend=self.imdecode_backend), ''
        except (OSError, SyntaxError, ValueError, cv2.error) as exc:  # PIL/cv2 on corrupt files
            seg, reason = None, f' ({type(exc).__name__}: {exc})'
        if seg is None:  # cv2 returns None
            raise ValueError(f'{sample_desc(results)}: cannot decode the label file {path}'
                             f'{reason}; the file is corrupt or not an image')
        return seg

    def __repr__(self) -> str:
        return (super().__repr__()[:-1] +
                f', ignore_index={self.ignore_index}, validate={self.validate})')

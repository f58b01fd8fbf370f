"""mmseg's ``LoadAnnotations`` for colour label PNGs, with a label-range check."""
from typing import Optional

import cv2
import numpy as np

from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS


def _sample_desc(results: dict) -> str:
    name = results.get('sample_name') or results.get('img_path')
    return f"sample {results.get('sample_idx', '?')} ({name})"


@TRANSFORMS.register_module()
class LoadMultiModalAnnotations(LoadAnnotations):
    """Load a label map, keep its channel 0, and check the class ids.

    mmseg's :class:`LoadAnnotations` reads the file (its decoders return 3- and 4-channel
    images in BGR(A) order) and applies ``reduce_zero_label`` and ``label_map`` element-wise;
    this subclass then keeps the file's channel 0 (R of an RGB PNG, i.e. index 2 of the decoded
    BGR array, as DeLiVER's reference loader reads it; index 0 of a 2-channel image). Because
    both mappings are element-wise, mapping then selecting equals selecting then mapping.
    Single-channel (grey or palette) labels pass through unchanged.

    Every value must then be below ``results['num_classes']`` or equal ``ignore_index``; other
    values raise ``ValueError`` naming the file, the values and the expected range (usually a
    wrong ``reduce_zero_label`` or a label file of another dataset). As in mmseg, label files
    are read as 8-bit: 16-bit label PNGs are not supported.

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
        reduce_zero_label (bool, optional): As in mmseg (deprecated there: set it on the
            dataset). Defaults to None.
        backend_args (dict, optional): mmengine file backend arguments. Defaults to None.
        imdecode_backend (str): Decoder of :func:`mmcv.imfrombytes`. Defaults to 'pillow'.

    Raises:
        FileNotFoundError: The label file is missing (names the sample and the path).
        ValueError: The label file is unreadable, or holds out-of-range values.
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
        path = results['seg_map_path']
        try:
            super()._load_seg_map(results)
        except FileNotFoundError:
            raise FileNotFoundError(f'{_sample_desc(results)}: the label file {path} does not '
                                    f'exist') from None
        except (OSError, ValueError, AttributeError, cv2.error) as exc:
            # PIL raises OSError/ValueError on corrupt files; cv2 returns None (AttributeError)
            raise ValueError(f'{_sample_desc(results)}: cannot decode the label file {path} '
                             f'({type(exc).__name__}: {exc}); the file is corrupt or not an '
                             f'image') from None
        seg = results['gt_seg_map']
        if seg.ndim == 3:
            seg = np.ascontiguousarray(seg[..., 2] if seg.shape[2] >= 3 else seg[..., 0])
            results['gt_seg_map'] = seg
        if self.validate and results.get('num_classes') is not None:
            self._check_range(seg, results, path)

    def _check_range(self, seg: np.ndarray, results: dict, path: str) -> None:
        num_classes = int(results['num_classes'])
        values = np.flatnonzero(np.bincount(seg.ravel(), minlength=256))  # uint8: fast unique
        bad = values[(values >= num_classes) & (values != self.ignore_index)]
        if bad.size:
            raise ValueError(
                f'{_sample_desc(results)}: the label file {path} holds values '
                f'{bad.tolist()} after reduce_zero_label={results.get("reduce_zero_label")} '
                f'and label_map; expected class ids 0..{num_classes - 1} or ignore '
                f'{self.ignore_index}. Check the label files and reduce_zero_label')

    def __repr__(self) -> str:
        return (super().__repr__()[:-1] +
                f', ignore_index={self.ignore_index}, validate={self.validate})')

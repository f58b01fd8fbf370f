"""Read every modality of a sample and stack them on the channel axis."""
import io
from typing import Dict, Optional, Union

import cv2
import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import BaseTransform

from mmseg.registry import TRANSFORMS

_NUMPY_SUFFIXES = ('.npz', '.npy')


def _sample_desc(results: dict) -> str:
    name = results.get('sample_name') or results.get('img_path')
    return f"sample {results.get('sample_idx', '?')} ({name})"


@TRANSFORMS.register_module()
class LoadMultiModalImageFromFiles(BaseTransform):
    """Load all modalities of a sample into one (H, W, sum(C)) array.

    Files are read in the order of ``results['modality_paths']``; the first one sets the size.
    PNG and other image files are decoded with ``cv2.IMREAD_UNCHANGED`` (8- and 16-bit kept
    as stored; a 3-channel file comes in BGR order, as mmseg's ``LoadImageFromFile``), so the
    RGB modality stays BGR and the data preprocessor's ``bgr_to_rgb`` flips it. ``.npz``
    files give their first array (or ``npz_key``); ``.npy`` files their array; arrays must be
    (H, W) or (H, W, C). Values are never rescaled: 16-bit and float data keep their range,
    normalise them with the preprocessor's per-modality mean/std.

    Channels per modality (``channels``, default 3): a 1-channel file is repeated to the
    requested count, or kept when it is 1; a 4-channel file keeps its first 3 when 3 are
    requested; a file whose channel count is otherwise different (e.g. a 3-channel file for a
    1-channel modality) raises ``ValueError``, since silently taking one channel would hide a
    wrong file or a wrong config.

    Sizes: a modality smaller than the first one with the same aspect ratio (within rounding)
    is resized to it with nearest neighbour (DeLiVER's low-resolution event case); a larger
    one or one with another aspect ratio raises ``ValueError``.

    Required Keys:

    - modality_paths (dict[str, str]): name -> file, in stacking order.
    - img_path (str), sample_idx (int), sample_name (str): optional, named in errors.

    Added Keys:

    - img (np.ndarray): (H, W, sum(C)); uint8 when every file is 8-bit and ``to_float32`` is
      False, else float32.
    - img_shape (tuple[int, int])
    - ori_shape (tuple[int, int])
    - modalities (list[str])
    - modality_channels (list[int])

    Args:
        channels (dict[str, int], optional): Channels per modality name; names not given get
            3. Defaults to None.
        npz_key (str | dict[str, str], optional): Array to read from ``.npz`` files, for all
            modalities or per modality; None reads the first array. Defaults to None.
        to_float32 (bool): Always return float32. Defaults to False.
        backend_args (dict, optional): mmengine file backend arguments. Defaults to None.

    Raises:
        FileNotFoundError: A modality file is missing (names the sample and the path).
        ValueError: A file is unreadable, has the wrong channel count, or a size that cannot
            be reconciled with the first modality's.
    """

    def __init__(self,
                 channels: Optional[Dict[str, int]] = None,
                 npz_key: Union[None, str, Dict[str, str]] = None,
                 to_float32: bool = False,
                 backend_args: Optional[dict] = None) -> None:
        self.channels = dict(channels or {})
        for name, ch in self.channels.items():
            if not isinstance(ch, int) or ch < 1:
                raise ValueError(f'channels[{name!r}]={ch!r}: give a positive int (1 or 3 for '
                                 f'images)')
        self.npz_key = npz_key
        self.to_float32 = to_float32
        self.backend_args = backend_args.copy() if backend_args else None

    def _read(self, results: dict, name: str, path: str) -> np.ndarray:
        try:
            content = fileio.get(path, backend_args=self.backend_args)
        except FileNotFoundError:
            raise FileNotFoundError(f'{_sample_desc(results)}: the {name!r} file {path} does '
                                    f'not exist') from None
        if path.lower().endswith(_NUMPY_SUFFIXES):
            return self._read_numpy(content, results, name, path)
        try:
            array = mmcv.imfrombytes(content, flag='unchanged', backend='cv2')
        except cv2.error as exc:
            raise ValueError(f'{_sample_desc(results)}: cannot decode the {name!r} file {path} '
                             f'({exc}); the file is corrupt or not an image') from None
        if array is None:
            raise ValueError(f'{_sample_desc(results)}: cannot decode the {name!r} file {path}; '
                             f'the file is corrupt or not an image')
        return array

    def _read_numpy(self, content: bytes, results: dict, name: str, path: str) -> np.ndarray:
        key = self.npz_key.get(name) if isinstance(self.npz_key, dict) else self.npz_key
        try:
            data = np.load(io.BytesIO(content), allow_pickle=False)
            if isinstance(data, np.ndarray):  # a .npy file
                return data
            with data:
                if not data.files:
                    raise ValueError('the archive holds no array')
                if key is not None and key not in data.files:
                    raise ValueError(f'it has no array {key!r}, only {data.files}')
                return data[key if key is not None else data.files[0]]
        except Exception as exc:
            raise ValueError(f'{_sample_desc(results)}: cannot read the {name!r} array file '
                             f'{path}: {exc}') from None

    def _fit_channels(self, array: np.ndarray, results: dict, name: str,
                      path: str) -> np.ndarray:
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3:
            raise ValueError(f'{_sample_desc(results)}: the {name!r} file {path} has shape '
                             f'{array.shape}; expected (H, W) or (H, W, C)')
        want, got = self.channels.get(name, 3), array.shape[2]
        if got == want:
            return array
        if got == 1:
            return np.repeat(array, want, axis=2)
        if got == 4 and want == 3:
            return array[..., :3]
        raise ValueError(f'{_sample_desc(results)}: the {name!r} file {path} has {got} channels '
                         f'but channels[{name!r}]={want}; set channels[{name!r}] to {got} or '
                         f'convert the file')

    def _fit_size(self, array: np.ndarray, ref_hw: tuple, ref_name: str, results: dict,
                  name: str, path: str) -> np.ndarray:
        (h, w), (ref_h, ref_w) = array.shape[:2], ref_hw
        if (h, w) == (ref_h, ref_w):
            return array
        # same aspect ratio up to the rounding of a downscaled size
        if h > ref_h or w > ref_w or abs(h * ref_w - w * ref_h) > (ref_h + ref_w) / 2:
            raise ValueError(
                f'{_sample_desc(results)}: the {name!r} file {path} is {h}x{w} (HxW) but the '
                f'{ref_name!r} modality is {ref_h}x{ref_w}; only a smaller modality with the '
                f'same aspect ratio can be resized to it. Fix or re-project the file')
        resized = mmcv.imresize(array, (ref_w, ref_h), interpolation='nearest')
        return resized.reshape(ref_h, ref_w, array.shape[2])

    def transform(self, results: dict) -> dict:
        """Read, fit and stack the modalities of one sample.

        Args:
            results (dict): Result dict with ``modality_paths``.

        Returns:
            dict: ``results`` with the added keys listed in the class docstring.
        """
        paths = results.get('modality_paths')
        if not paths:
            raise KeyError(f"{_sample_desc(results)} has no 'modality_paths'; build the data "
                           f'infos with a MultiModalSegDataset (or set the key to a dict '
                           f'name -> file)')
        arrays, ref_hw, ref_name = [], None, None
        for name, path in paths.items():
            array = self._read(results, name, path)
            if array.dtype not in (np.uint8, np.uint16):  # e.g. float64, bool: cv2-resizable
                array = array.astype(np.float32)
            array = self._fit_channels(array, results, name, path)
            if ref_hw is None:
                ref_hw, ref_name = array.shape[:2], name
            else:
                array = self._fit_size(array, ref_hw, ref_name, results, name, path)
            arrays.append(array)
        if self.to_float32 or any(a.dtype != np.uint8 for a in arrays):
            arrays = [a.astype(np.float32) for a in arrays]
        img = np.ascontiguousarray(np.concatenate(arrays, axis=2))
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        results['modalities'] = list(paths)
        results['modality_channels'] = [a.shape[2] for a in arrays]
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(channels={self.channels}, npz_key={self.npz_key!r}, '
                f'to_float32={self.to_float32}, backend_args={self.backend_args})')


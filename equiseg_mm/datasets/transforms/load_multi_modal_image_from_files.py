"""Read every modality of a sample and stack them on the channel axis."""
import io
import logging
import os
from typing import Dict, List, Mapping, Optional, Tuple, Union

import cv2
import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmengine.logging import print_log
from mmcv.transforms import BaseTransform

from mmseg.registry import TRANSFORMS

from ...utils import sample_desc

_NUMPY_SUFFIXES = ('.npz', '.npy')

#: A modality source: a file, an already loaded (H, W) / (H, W, C) array, or None (absent).
ModalitySource = Union[None, str, os.PathLike, np.ndarray]


@TRANSFORMS.register_module()
class LoadMultiModalImageFromFiles(BaseTransform):
    """Load all modalities of a sample into one (H, W, sum(C)) array.

    Images are decoded unchanged (8/16-bit, BGR), ``.npz`` / ``.npy`` files give an array; values
    are never rescaled. A 1-channel file is repeated to the modality's ``channels``, a 4-channel
    one keeps its first 3 when 3 are wanted; a modality smaller than the first one with the same
    aspect ratio is resized to it (nearest). :meth:`load_modalities` holds these rules.

    Required Keys:

    - modality_paths (dict[str, str]): name -> file, in stacking order.
    - img_path (str), sample_idx (int), sample_name (str): optional, named in errors.

    Added Keys:

    - img (np.ndarray): (H, W, sum(C)), uint8 or float32 (see :meth:`load_modalities`).
    - img_shape (tuple[int, int])
    - ori_shape (tuple[int, int])
    - modalities (list[str])
    - modality_channels (list[int])

    Args:
        channels (dict[str, int], optional): Channels per modality (else 3). Defaults to None.
        npz_key (str | dict[str, str], optional): Array to read from ``.npz`` files, for all
            modalities or per modality; None reads the first array. Defaults to None.
        to_float32 (bool): Always return float32. Defaults to False.
        backend_args (dict, optional): mmengine file backend arguments. Defaults to None.

    Raises:
        FileNotFoundError: A modality file is missing (names the sample and the path).
        ValueError: A file is unreadable, has another channel count or size, or NaN/Inf, or
            a modality's files mix bit depths (8 and 16 bits).
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
        self._bit_depths: Dict[str, np.dtype] = {}  # per modality, from the first file read

    def load_modalities(self,
                        sources: Mapping[str, ModalitySource],
                        sample: str = '',
                        size_from: str = 'first',
                        notify_resize: bool = False) -> Tuple[np.ndarray, List[int]]:
        """Read, fit and stack modalities (the rules of the class docstring).

        Args:
            sources (Mapping[str, str | PathLike | np.ndarray | None]): Name -> file, (H, W[, C])
                array (BGR colour) or None (zeros), in stacking order.
            sample (str): How errors name the sample. Defaults to ''.
            size_from (str): Which present modality sets the size: 'first' or 'largest' (the
                first among equals). Defaults to 'first'.
            notify_resize (bool): Warn about each resized modality. Defaults to False.

        Returns:
            tuple[np.ndarray, list[int]]: The (H, W, sum(C)) image, uint8 if every modality is
            8-bit and not ``to_float32``, else float32, and the channels per modality.

        Raises:
            FileNotFoundError: A file is missing.
            TypeError: A source is neither a path, an array nor None.
            ValueError: No modality is present, or one cannot be read or fitted.
        """
        if size_from not in ('first', 'largest'):
            raise ValueError(f"size_from must be 'first' or 'largest', got {size_from!r}")
        lead = f'{sample}: ' if sample else ''  # starts every error message
        present: Dict[str, np.ndarray] = {}
        what: Dict[str, str] = {}
        for name, src in sources.items():
            if src is None:
                continue
            if isinstance(src, (str, os.PathLike)):
                path = os.fspath(src)
                array, what[name] = self._read(path, name, lead), f'file {path}'
            elif isinstance(src, np.ndarray):
                array, what[name] = src, 'array'
            else:
                raise TypeError(f'{lead}modality {name!r}: give a file path, an (H, W[, C]) '
                                f'numpy array or None, got {type(src).__name__}')
            present[name] = self._fit_channels(self._to_supported_dtype(
                array, name, what[name], lead), name, what[name], lead)
            if isinstance(src, (str, os.PathLike)):
                self._check_bit_depth(name, present[name].dtype, what[name], lead)
        if not present:
            raise ValueError(f'{lead}no modality given; give at least one of the '
                             f'modalities {list(sources)} (a file path or an array)')

        if size_from == 'first':
            ref_name = next(iter(present))
        else:
            ref_name = max(present, key=lambda n: present[n].shape[0] * present[n].shape[1])
        ref_hw = present[ref_name].shape[:2]
        for name, array in present.items():
            present[name] = self._fit_size(array, ref_hw, ref_name, name, what[name], lead)
            if notify_resize and array.shape[:2] != ref_hw:
                print_log(f'{lead}{name} ({what[name]}, {array.shape[0]}x{array.shape[1]}) was '
                          f'resized to {ref_hw[0]}x{ref_hw[1]} (nearest), the size of '
                          f'{ref_name}, which sets the output size', logger='current',
                          level=logging.WARNING)

        as_float = self.to_float32 or any(a.dtype != np.uint8 for a in present.values())
        dtype = np.float32 if as_float else np.uint8
        arrays = [present[n].astype(dtype, copy=False) if n in present else
                  np.zeros(ref_hw + (self.channels.get(n, 3), ), dtype) for n in sources]
        img = np.ascontiguousarray(np.concatenate(arrays, axis=2))
        return img, [a.shape[2] for a in arrays]

    def _read(self, path: str, name: str, lead: str) -> np.ndarray:
        try:
            content = fileio.get(path, backend_args=self.backend_args)
        except FileNotFoundError:
            raise FileNotFoundError(f'{lead}the {name!r} file {path} does not exist') from None
        if path.lower().endswith(_NUMPY_SUFFIXES):
            return self._read_numpy(content, path, name, lead)
        try:
            array, reason = mmcv.imfrombytes(content, flag='unchanged', backend='cv2'), ''
        except cv2.error as exc:
            array, reason = None, f' ({exc})'
        if array is None:  # cv2 returns None
            raise ValueError(f'{lead}cannot decode the {name!r} file {path}{reason}; the file is '
                             f'corrupt or not an image')
        return array

    def _read_numpy(self, content: bytes, path: str, name: str, lead: str) -> np.ndarray:
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
            raise ValueError(f'{lead}cannot read the {name!r} array file {path}: {exc}') from None

    def _check_bit_depth(self, name: str, dtype: np.dtype, what: str, lead: str) -> None:
        """Raise ``ValueError`` when a modality's files mix 8- and 16-bit images (one mean/std
        cannot normalise both)."""
        seen = self._bit_depths.setdefault(name, dtype)
        if seen != dtype:
            raise ValueError(
                f'{lead}modality {name!r}: {what} is {dtype} but the earlier files of this '
                f'modality were {seen}; one mean/std cannot normalise both. Convert the files '
                'of a modality to one bit depth')

    @staticmethod
    def _to_supported_dtype(array: np.ndarray, name: str, what: str, lead: str) -> np.ndarray:
        """uint8 and uint16 stay; anything else (float64, bool, ...) becomes float32."""
        if array.dtype in (np.uint8, np.uint16):
            return array
        is_float = np.issubdtype(array.dtype, np.floating)
        with np.errstate(over='ignore'):  # an overflow to Inf is reported below
            array = array.astype(np.float32)
        if is_float and not np.isfinite(array).all():  # checked after the cast: it may overflow
            nan = int(np.count_nonzero(np.isnan(array)))
            inf = int(np.count_nonzero(np.isinf(array)))
            raise ValueError(f'{lead}the {name!r} {what} holds {nan + inf} non-finite values '
                             f'({nan} NaN, {inf} Inf as float32) of {array.size}; replace them '
                             f'(e.g. by 0 plus a validity channel) before loading')
        return array

    def _fit_channels(self, array: np.ndarray, name: str, what: str, lead: str) -> np.ndarray:
        shape = tuple(array.shape)
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3:
            raise ValueError(f'{lead}the {name!r} {what} has shape {shape}; expected (H, W) '
                             f'or (H, W, C)')
        want, got = self.channels.get(name, 3), array.shape[2]
        if got == want:
            return array
        if got == 1:
            return np.repeat(array, want, axis=2)
        if got == 4 and want == 3:
            return array[..., :3]
        also = ', or (H, W, 4) with the 4th dropped' if want == 3 else ''
        raise ValueError(f'{lead}the {name!r} {what} has {got} channels but '
                         f'channels[{name!r}]={want} (expected shape (H, W, {want}), or (H, W) / '
                         f'(H, W, 1) repeated{also}; got {shape}); set channels[{name!r}] to '
                         f'{got} or convert the data')

    @staticmethod
    def _fit_size(array: np.ndarray, ref_hw: tuple, ref_name: str, name: str, what: str,
                  lead: str) -> np.ndarray:
        (h, w), (ref_h, ref_w) = array.shape[:2], ref_hw
        if (h, w) == (ref_h, ref_w):
            return array
        # same aspect ratio up to the rounding of a downscaled size
        if h > ref_h or w > ref_w or abs(h * ref_w - w * ref_h) > (ref_h + ref_w) / 2:
            raise ValueError(
                f'{lead}modality {name!r}: got shape {tuple(array.shape)} ({h}x{w}, '
                f'HxW, from the {what}) but the {ref_name!r} modality is {ref_h}x{ref_w}; '
                f'expected shape {(ref_h, ref_w, array.shape[2])} or a smaller size with the '
                f'same aspect ratio (resized with nearest neighbour). Fix or re-project the data')
        resized = mmcv.imresize(array, (ref_w, ref_h), interpolation='nearest')
        return resized.reshape(ref_h, ref_w, array.shape[2])

    def transform(self, results: dict) -> dict:
        """Read, fit and stack the modalities of one sample.

        Args:
            results (dict): Result dict with ``modality_paths``.

        Returns:
            dict: ``results`` with the added keys.
        """
        paths = results.get('modality_paths')
        if not paths:
            raise KeyError(f"{sample_desc(results)} has no 'modality_paths'; build the data "
                           f'infos with a MultiModalSegDataset (or set the key to a dict '
                           f'name -> file)')
        absent = [name for name, path in paths.items() if path is None]
        if absent:
            raise ValueError(f'{sample_desc(results)} has no file for the modalities {absent} '
                             f'(modality_paths holds None)')
        img, channels = self.load_modalities(paths, sample_desc(results))
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        results['modalities'] = list(paths)
        results['modality_channels'] = channels
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(channels={self.channels}, npz_key={self.npz_key!r}, '
                f'to_float32={self.to_float32}, backend_args={self.backend_args})')


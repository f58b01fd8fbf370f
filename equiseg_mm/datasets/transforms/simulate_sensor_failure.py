"""Test-time sensor-failure corruption of one modality of a stacked multimodal image."""
from typing import Optional

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from mmseg.registry import TRANSFORMS

from ...utils import ModalitySpec, check_names, seed_from

#: Sensor-failure cases of DeLiVER and the modality each one corrupts by default.
FAILURE_CASES = {
    'motionblur': 'rgb',
    'overexposure': 'rgb',
    'underexposure': 'rgb',
    'lidarjitter': 'lidar',
    'eventlowres': 'event',
}

# Strength per severity level 1..5 (index 0 = level 1). Lengths and radii are fractions of the
# image width / shorter side, so a severity means the same at any image size.
_BLUR_FRACTION = (0.02, 0.04, 0.06, 0.08, 0.10)
_OVER_SATURATED = (0.1, 0.3, 0.5, 0.7, 0.9)
_UNDER_GAIN = (0.4, 0.25, 0.15, 0.08, 0.04)
_UNDER_NOISE = (1.0, 2.0, 3.0, 4.0, 5.0)
_JITTER_FRACTION = (0.01, 0.02, 0.04, 0.06, 0.08)
_LOWRES_FACTOR = (2, 3, 4, 6, 8)


def _check(case: str, severity: int) -> None:
    check_names([case], FAILURE_CASES, 'sensor-failure case')
    if not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f'severity must be an int in 1..5, got {severity!r}')


def _motion_blur(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    length = max(3, int(round(img.shape[1] * _BLUR_FRACTION[severity - 1])))
    length += 1 - length % 2  # odd, so the kernel has a centre
    angle = rng.uniform(0.0, 180.0)
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    kernel /= max(kernel.sum(), 1e-6)
    out = cv2.filter2D(img.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT)
    return out.reshape(img.shape)


def _overexposure(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    # A gain that saturates a given share of the pixels, so a dark frame is overexposed too.
    share = min(0.99, _OVER_SATURATED[severity - 1] * rng.uniform(0.9, 1.1))
    peak = img.reshape(img.shape[0], img.shape[1], -1).max(axis=-1).astype(np.float32)
    gain = 255.0 / max(float(np.percentile(peak, 100.0 * (1.0 - share))), 1.0)
    return np.clip(img.astype(np.float32) * gain, 0, 255)


def _underexposure(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    gain = _UNDER_GAIN[severity - 1] * rng.uniform(0.9, 1.1)
    noise = rng.normal(0.0, _UNDER_NOISE[severity - 1], img.shape).astype(np.float32)
    return np.clip(img.astype(np.float32) * gain + noise, 0, 255)


def _lidar_jitter(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    radius = max(1, int(round(min(h, w) * _JITTER_FRACTION[severity - 1])))
    flat = img.reshape(h, w, -1)
    rows, cols = np.nonzero(np.any(flat != 0, axis=-1))
    out = np.zeros_like(flat)
    if rows.size:
        dr = rng.integers(-radius, radius + 1, rows.size)
        dc = rng.integers(-radius, radius + 1, rows.size)
        new_r = np.clip(rows + dr, 0, h - 1)
        new_c = np.clip(cols + dc, 0, w - 1)
        out[new_r, new_c] = flat[rows, cols]
    return out.reshape(img.shape)


def corrupt_modality(img: np.ndarray,
                     case: str,
                     severity: int = 3,
                     rng: Optional[np.random.Generator] = None,
                     keep_size: bool = True) -> np.ndarray:
    """Apply one sensor-failure case to the array of a single modality.

    Args:
        img (np.ndarray): (H, W) or (H, W, C) array of one modality, values in 0..255.
        case (str): 'motionblur' (linear kernel, random angle), 'overexposure' (a gain that
            saturates a share of the pixels), 'underexposure' (low gain plus noise), 'lidarjitter'
            (non-zero pixels move randomly) or 'eventlowres' (downsampled, then upsampled).
        severity (int): Strength level 1..5 (strengths: this project's choice). Defaults to 3.
        rng (np.random.Generator, optional): Defaults to None (``np.random.default_rng(0)``).
        keep_size (bool): False returns 'eventlowres' downsampled. Defaults to True.

    Returns:
        np.ndarray: The corrupted array, with the dtype and (see ``keep_size``) shape of ``img``.
    """
    _check(case, severity)
    rng = np.random.default_rng(0) if rng is None else rng
    if case == 'eventlowres':
        h, w = img.shape[:2]
        factor = _LOWRES_FACTOR[severity - 1]
        small = cv2.resize(img, (max(1, w // factor), max(1, h // factor)),
                           interpolation=cv2.INTER_AREA)
        small = small.reshape(small.shape[:2] + img.shape[2:])
        if not keep_size:
            return small.astype(img.dtype)
        out = cv2.resize(small, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
        return out.reshape(img.shape).astype(img.dtype)
    fn = {
        'motionblur': _motion_blur,
        'overexposure': _overexposure,
        'underexposure': _underexposure,
        'lidarjitter': _lidar_jitter,
    }[case]
    out = fn(img, severity, rng)
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(img.dtype)


@TRANSFORMS.register_module()
class SimulateSensorFailure(BaseTransform):
    """Corrupt one modality of the stacked image, as in DeLiVER's sensor-failure cases.

    The corruption is deterministic per sample: its draws come from a generator seeded with
    ``seed``, the case and the sample's ``img_path`` (else ``sample_idx``).

    Required Keys:

    - img
    - modalities
    - modality_channels
    - img_path or sample_idx (optional; the seed alone is used without them)

    Modified Keys:

    - img (only the channels of the target modality)

    Added Keys:

    - case

    Args:
        case (str): One of ``FAILURE_CASES``.
        modality (str, optional): Modality to corrupt. Defaults to None (``FAILURE_CASES[case]``).
        severity (int): Strength level 1..5, see :func:`corrupt_modality`. Defaults to 3.
        seed (int): Base seed of the per-sample random generator. Defaults to 0.
    """

    def __init__(self,
                 case: str,
                 modality: Optional[str] = None,
                 severity: int = 3,
                 seed: int = 0) -> None:
        _check(case, severity)
        if modality is not None and not isinstance(modality, str):
            raise ValueError(f'modality must be a modality name (str) or None, got {modality!r}')
        self.case = case
        self.modality = FAILURE_CASES[case] if modality is None else modality
        self.severity = int(severity)
        self.seed = int(seed)

    def transform(self, results: dict) -> dict:
        """Corrupt the target modality's channels of ``results['img']``.

        Args:
            results (dict): Result dict from the multimodal loading transform.

        Returns:
            dict: The result dict with the corrupted image and ``case`` set.
        """
        spec = ModalitySpec(results['modalities'], results['modality_channels'])
        spec.select(self.modality, f'modality of SimulateSensorFailure(case={self.case!r})')
        sl = spec.slices[self.modality]
        img = results['img']
        part = np.ascontiguousarray(img[..., sl])
        key = ''
        if results.get('img_path') is not None:
            key = str(results['img_path'])
        elif results.get('sample_idx') is not None:
            key = f'sample_idx={results["sample_idx"]}'
        rng = np.random.default_rng([self.seed, seed_from(self.case, key)])
        corrupted = corrupt_modality(part, self.case, self.severity, rng)
        img = img.copy()
        img[..., sl] = corrupted
        results['img'] = img
        results['case'] = self.case
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(case={self.case!r}, modality={self.modality!r}, '
                f'severity={self.severity}, seed={self.seed})')

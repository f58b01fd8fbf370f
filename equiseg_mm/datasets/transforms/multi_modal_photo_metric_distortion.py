"""mmseg's photometric distortion, restricted to the RGB channels of a stacked image."""
from typing import Sequence

import numpy as np

from mmseg.datasets.transforms import PhotoMetricDistortion
from mmseg.registry import TRANSFORMS

from ...utils import ModalitySpec


@TRANSFORMS.register_module()
class MultiModalPhotoMetricDistortion(PhotoMetricDistortion):
    """Apply mmseg's :class:`PhotoMetricDistortion`, with its random draws, to one modality only.

    Required Keys:

    - img
    - modalities
    - modality_channels

    Modified Keys:

    - img (only the channels of ``modality``)

    Args:
        modality (str): Name of the colour modality; it must have 3 channels. Defaults to 'rgb'.
        brightness_delta (int): Delta of brightness. Defaults to 32.
        contrast_range (Sequence[float]): Range of contrast. Defaults to (0.5, 1.5).
        saturation_range (Sequence[float]): Range of saturation. Defaults to (0.5, 1.5).
        hue_delta (int): Delta of hue. Defaults to 18.
    """

    def __init__(self,
                 modality: str = 'rgb',
                 brightness_delta: int = 32,
                 contrast_range: Sequence[float] = (0.5, 1.5),
                 saturation_range: Sequence[float] = (0.5, 1.5),
                 hue_delta: int = 18) -> None:
        if not isinstance(modality, str):
            raise ValueError(f'modality must be a modality name (str), got {modality!r}')
        super().__init__(brightness_delta=brightness_delta, contrast_range=contrast_range,
                         saturation_range=saturation_range, hue_delta=hue_delta)
        self.modality = modality

    def transform(self, results: dict) -> dict:
        """Distort the colour modality's channels (rounded and clipped to uint8 if not uint8).

        Args:
            results (dict): Result dict from the multimodal loading transform.

        Returns:
            dict: The result dict with the colour channels distorted.
        """
        spec = ModalitySpec(results['modalities'], results['modality_channels'])
        spec.select(self.modality, 'modality of MultiModalPhotoMetricDistortion')
        sl = spec.slices[self.modality]
        if sl.stop - sl.start != 3:
            raise ValueError(f'MultiModalPhotoMetricDistortion: modality {self.modality!r} has '
                             f'{sl.stop - sl.start} channels; photometric distortion needs 3')
        img = results['img']
        colour = img[..., sl]
        if colour.dtype != np.uint8:
            colour = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
        colour = super().transform({'img': np.ascontiguousarray(colour)})['img']
        img = img.copy()
        img[..., sl] = colour
        results['img'] = img
        return results

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', modality={self.modality!r})'

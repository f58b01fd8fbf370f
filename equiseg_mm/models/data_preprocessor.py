"""Data preprocessor for stacked multimodal inputs, with the missing/noisy-modality protocols."""
import contextlib
from collections.abc import Mapping
from numbers import Number
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS

from ..utils import seed_from, unwrap_model
from ..utils.modalities import channel_slices, check_modalities

__all__ = ['MultiModalSegDataPreProcessor', 'get_multimodal_preprocessor',
           'is_multimodal_preprocessor']

#: ImageNet statistics, used for every modality by default (as the CMNeXt reference does).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

_RANDOM_UNITS = ('value', 'pixel')

MeanStd = Optional[Union[Sequence[Number], Dict[str, Sequence[Number]]]]
DropoutRates = Union[float, Dict[str, float]]


def _dropout_rates(modality_dropout: DropoutRates, never_drop: Sequence[str],
                   modalities: List[str]) -> Dict[str, float]:
    """Validate ``modality_dropout`` and ``never_drop``; the drop rate of every modality."""

    def rate(value, key):
        if isinstance(value, bool) or not isinstance(value, Number) \
                or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f'{key} must be a number in [0, 1], got {value!r}')
        return float(value)

    if isinstance(modality_dropout, Mapping):
        names = [str(k) for k in modality_dropout]
        check_modalities(names, modalities, what='modality in modality_dropout')
        rates = {m: 0.0 for m in modalities}
        rates.update({str(k): rate(v, f'modality_dropout[{str(k)!r}]')
                      for k, v in modality_dropout.items()})
    else:
        p = rate(modality_dropout, 'modality_dropout')
        rates = {m: p for m in modalities}
    if isinstance(never_drop, str) or not isinstance(never_drop, (Sequence, set, frozenset)):
        raise ValueError(f'never_drop must be a list of modality names, got {never_drop!r}')
    check_modalities([str(m) for m in never_drop], modalities, what='modality in never_drop')
    if isinstance(modality_dropout, Mapping):
        clash = [m for m in never_drop if rates[m] > 0]
        if clash:
            raise ValueError(f'modalities {clash} are in never_drop but have a drop rate in '
                             f'modality_dropout {dict(modality_dropout)}; give one or the other')
    for m in never_drop:
        rates[m] = 0.0
    return rates


def _per_modality(stats: MeanStd, key: str, default: Sequence[float],
                  modalities: List[str], channels: List[int]) -> List[float]:
    """Expand ``mean`` or ``std`` into one value per stacked channel."""
    if stats is None:
        per_mod = {}
        for name, ch in zip(modalities, channels):
            # Choice: a modality that does not have 3 channels gets the ImageNet average.
            per_mod[name] = list(default) if ch == 3 else [sum(default) / 3] * ch
    elif isinstance(stats, dict):
        check_modalities(list(stats), modalities, what=f'modality in {key}')
        missing = [m for m in modalities if m not in stats]
        if missing:
            raise ValueError(f'{key} has no entry for modalities {missing}; give one list per '
                             f'modality in {modalities}')
        per_mod = {m: list(stats[m]) for m in modalities}
    else:
        per_mod = {m: list(stats) for m in modalities}
    values = []
    for name, ch in zip(modalities, channels):
        if len(per_mod[name]) != ch:
            raise ValueError(f'{key} for modality {name!r} has {len(per_mod[name])} values '
                             f'{per_mod[name]} but the modality has {ch} channels')
        values.extend(float(v) for v in per_mod[name])
    return values


def _sample_seed(seed: int, data_sample: Any, salt: str) -> Optional[int]:
    """A seed derived from ``seed`` and the sample's path or index, or None if it has neither."""
    meta = getattr(data_sample, 'metainfo', None) or {}
    key = meta.get('img_path', meta.get('sample_idx'))
    if key is None:
        return None
    return seed_from(seed, salt, key, bits=63)


@MODELS.register_module()
class MultiModalSegDataPreProcessor(SegDataPreProcessor):
    """Pre-processor for modalities stacked along the channel axis.

    Per sample, in this order: flip the ``bgr_modalities`` (by default every 3-channel one) from
    BGR to RGB (``bgr_to_rgb``), add salt-and-pepper noise to every modality (NM,
    ``noise_density``), normalise each modality with its own mean and std, zero the missing
    modalities (EMM) or a random part of them (RMM, ``missing_ratio`` < 1), drop random
    modalities while training (``modality_dropout``); then :meth:`SegDataPreProcessor.forward`
    itself pads and stacks the batch (and applies the ``batch_augments`` while training).

    The preprocessor owns the state of the missing/noisy-modality protocol
    (``missing_modalities``, ``missing_ratio``, ``noise_density``: the config values by
    default). Code that runs the model under another setting uses :meth:`protocol`, which
    restores the state afterwards; the robustness test loop, the inference API and the
    modality panels all go through it::

        with model.data_preprocessor.protocol(missing=('lidar', ), ratio=1.0, noise=0.0):
            outputs = model.test_step(data_batch)

    Randomness: while training, mmseg/torch's global generator is used (so the runner's seed
    governs it; modality dropout draws from the CPU one). While testing, RMM masks and NM noise
    come from a generator seeded with ``seed`` and the sample's ``img_path`` (``sample_idx``
    without a path), so an evaluation pass is reproducible whatever the batch size, order or
    number of workers, and the RMM masks of one sample are nested across ratios (0.25 zeroes a
    subset of what 0.5 zeroes). Samples with neither key use a generator that is re-seeded with
    ``seed`` whenever one of the protocol attributes is set.

    Modality dropout rule (training only): every modality m has a drop rate r_m
    (``modality_dropout``: one rate for all, or one per modality; 0 for the ``never_drop``
    modalities). Each sample independently drops (zeroes after normalisation) each of its
    modalities that is not already missing with probability r_m, independently of the other
    modalities. If that would drop every remaining (not missing) modality of the sample, exactly
    one of them is kept instead, drawn with probability proportional to its keep rate 1 - r_m
    (uniformly when those rates are all equal, e.g. with one rate for all or when every r_m is
    1). So a sample never loses all its modalities, a modality with r_m = 0 is never dropped (and
    a sample that has one never needs the fallback), and one with r_m = 1 is kept only when
    every remaining modality has r_m = 1. A dropped modality reaches the backbone as zeros,
    exactly like a missing one at test time (the backbone does not back-propagate into a branch
    from such all-zero inputs, see :class:`~equiseg_mm.models.backbones.MultiModalMiT`).

    Args:
        modalities (Sequence[str]): Modality names in stacking order.
        channels (Sequence[int], optional): Channels per modality. Defaults to None (3 each).
        mean (Sequence[Number] | dict, optional): Per-channel mean: a dict name -> list, or one
            list used for every modality. Defaults to None (the ImageNet mean for every 3-channel
            modality, its average for other channel counts).
        std (Sequence[Number] | dict, optional): Per-channel std, as ``mean``. Defaults to None
            (the ImageNet std).
        size (tuple, optional): Fixed padding size. Defaults to None.
        size_divisor (int, optional): The divisor of the padded size. Defaults to None; when
            training with neither ``size`` nor ``size_divisor`` the batch is padded to its
            largest sample (mmseg asserts instead).
        pad_val (Number): Padding value of the inputs. Defaults to 0.
        seg_pad_val (Number): Padding value of the segmentation maps. Defaults to 255.
        bgr_to_rgb (bool): Flip the channels of the ``bgr_modalities`` (BGR -> RGB). Defaults to
            False.
        rgb_modality (str): Name of the colour modality (what overlays and pictures blend on).
            Defaults to 'rgb'.
        bgr_modalities (Sequence[str], optional): The modalities ``bgr_to_rgb`` flips. Defaults
            to None: every 3-channel modality, because cv2 decodes every 3-channel image file in
            BGR order and the flip restores the file's own channel order (HHA, event and lidar
            images then reach their branches as the CMNeXt reference loader reads them).
        missing_modalities (Sequence[str]): Modalities zeroed after normalisation, in training
            and testing. Defaults to ().
        missing_ratio (float): In (0, 1]. 1.0 zeroes the whole missing modalities (EMM); below 1
            each element of a missing modality is zeroed with this probability (RMM).
            Defaults to 1.0.
        noise_density (float): In [0, 1]. Density of salt-and-pepper noise applied to every
            modality before normalisation (NM): half pepper (0), half salt (``noise_max``).
            Defaults to 0.0.
        noise_max (float): Salt value. Defaults to 255.0.
        random_unit (str): What one RMM/NM draw covers: 'value' (every channel of every pixel
            independently, as skimage's salt-and-pepper) or 'pixel' (all channels of one modality
            at one pixel together). The protocol papers do not say; 'value' is this project's
            choice. Defaults to 'value'.
        modality_dropout (float | dict): Training-only drop rates, see the rule above: one
            number in [0, 1] for every modality, or a dict modality name -> rate in [0, 1]
            (e.g. ``dict(depth=0.5, event=0.3)``), where modalities it does not name are never
            dropped. Defaults to 0.0 (no dropout).
        never_drop (Sequence[str] | str): Modalities modality dropout never drops (rate 0),
            e.g. ``['rgb']`` with a single ``modality_dropout`` rate for the others. Naming one
            that a ``modality_dropout`` dict gives a rate above 0 is an error. Defaults to ().
        seed (int): Seed of the test-time RMM/NM randomness. Defaults to 0.
        batch_augments (list[dict], optional): Batch-level augmentations. Defaults to None.
        test_cfg (dict, optional): Padding at test time (keys ``size`` / ``size_divisor``).
            Defaults to None.
    """

    def __init__(self,
                 modalities: Sequence[str],
                 channels: Optional[Sequence[int]] = None,
                 mean: MeanStd = None,
                 std: MeanStd = None,
                 size: Optional[tuple] = None,
                 size_divisor: Optional[int] = None,
                 pad_val: Number = 0,
                 seg_pad_val: Number = 255,
                 bgr_to_rgb: bool = False,
                 rgb_modality: str = 'rgb',
                 bgr_modalities: Optional[Sequence[str]] = None,
                 missing_modalities: Sequence[str] = (),
                 missing_ratio: float = 1.0,
                 noise_density: float = 0.0,
                 noise_max: float = 255.0,
                 random_unit: str = 'value',
                 modality_dropout: DropoutRates = 0.0,
                 never_drop: Sequence[str] = (),
                 seed: int = 0,
                 batch_augments: Optional[List[dict]] = None,
                 test_cfg: Optional[dict] = None) -> None:
        if size is not None and size_divisor is not None:
            raise ValueError(f'give at most one of size ({size}) and size_divisor '
                             f'({size_divisor}), not both')
        # mmseg's forward pads and stacks the batch after this class's per-sample steps: it
        # gets no channel flip and no normalisation (both per modality, here), and a divisor of
        # 1 when neither size is given, which pads a training batch to its largest sample
        # (mmseg's stack_batch asserts that one of them is set).
        super().__init__(mean=None, std=None, size=size,
                         size_divisor=1 if size is None and size_divisor is None
                         else size_divisor,
                         pad_val=pad_val, seg_pad_val=seg_pad_val, bgr_to_rgb=False,
                         rgb_to_bgr=False, batch_augments=batch_augments, test_cfg=test_cfg)
        if isinstance(modalities, str) or not modalities:
            raise ValueError(f'modalities must be a non-empty list of names, got {modalities!r}')
        self._modalities = [str(m) for m in modalities]
        channels = [3] * len(self._modalities) if channels is None else [int(c) for c in channels]
        self.channels = channels
        self.slices = channel_slices(self._modalities, channels)
        self.total_channels = sum(channels)

        if bgr_modalities is None:
            bgr_modalities = [m for m, c in zip(self._modalities, channels) if c == 3]
        elif isinstance(bgr_modalities, str):
            bgr_modalities = [bgr_modalities]
        check_modalities(list(bgr_modalities), self._modalities, what='modality in bgr_modalities')
        for name in bgr_modalities:
            width = self.slices[name].stop - self.slices[name].start
            if bgr_to_rgb and width != 3:
                raise ValueError(f'bgr_to_rgb needs the bgr_modalities to have 3 channels; '
                                 f'{name!r} has {width}')
        self.bgr_to_rgb = bool(bgr_to_rgb)
        self.rgb_modality = rgb_modality
        self.bgr_modalities = [m for m in self._modalities if m in bgr_modalities]
        # channel permutation applied by bgr_to_rgb (identity outside the flipped modalities)
        order = list(range(self.total_channels))
        for name in self.bgr_modalities:
            sl = self.slices[name]
            order[sl] = order[sl][::-1]
        self._bgr_order = order

        mean_values = _per_modality(mean, 'mean', IMAGENET_MEAN, self._modalities, channels)
        std_values = _per_modality(std, 'std', IMAGENET_STD, self._modalities, channels)
        if any(s <= 0 for s in std_values):
            raise ValueError(f'std values must be positive, got {std_values}')
        self.register_buffer('mean', torch.tensor(mean_values).view(-1, 1, 1), False)
        self.register_buffer('std', torch.tensor(std_values).view(-1, 1, 1), False)

        if random_unit not in _RANDOM_UNITS:
            raise ValueError(f'random_unit must be one of {list(_RANDOM_UNITS)}, '
                             f'got {random_unit!r}')
        self.random_unit = random_unit
        never_drop = [never_drop] if isinstance(never_drop, str) else never_drop
        #: dict[str, float]: The drop rate of every modality (0 for the ``never_drop`` ones).
        self.dropout_rates = _dropout_rates(modality_dropout, never_drop, self._modalities)
        self.never_drop = tuple(m for m in self._modalities if m in never_drop)
        self.modality_dropout = dict(modality_dropout) if isinstance(modality_dropout, Mapping) \
            else float(modality_dropout)
        self.noise_max = float(noise_max)
        self.seed = int(seed)
        self._fallback_generator = torch.Generator()
        self.missing_modalities = missing_modalities
        self.missing_ratio = missing_ratio
        self.noise_density = noise_density

    # --- protocol state: the config values, changed for a while by protocol() ------------------
    @property
    def modalities(self) -> List[str]:
        """list[str]: The modality names in stacking order (read-only)."""
        return list(self._modalities)

    @property
    def missing_modalities(self) -> tuple:
        """tuple[str]: Modalities zeroed after normalisation; at least one must remain."""
        return self._missing_modalities

    @missing_modalities.setter
    def missing_modalities(self, value: Sequence[str]) -> None:
        value = (value, ) if isinstance(value, str) else tuple(value or ())
        check_modalities(value, self._modalities, what='modality in missing_modalities')
        if set(value) >= set(self._modalities):
            raise ValueError(f'missing_modalities {list(value)} leaves no modality; at least one '
                             f'of {self._modalities} must remain')
        self._missing_modalities = tuple(m for m in self._modalities if m in value)
        self.reset_seed()

    @property
    def missing_ratio(self) -> float:
        """float: In (0, 1]; 1.0 zeroes whole modalities (EMM), less zeroes elements (RMM)."""
        return self._missing_ratio

    @missing_ratio.setter
    def missing_ratio(self, value: float) -> None:
        if not 0.0 < float(value) <= 1.0:
            raise ValueError(f'missing_ratio must be in (0, 1], got {value!r}')
        self._missing_ratio = float(value)
        self.reset_seed()

    @property
    def noise_density(self) -> float:
        """float: In [0, 1]; salt-and-pepper density on every modality (NM)."""
        return self._noise_density

    @noise_density.setter
    def noise_density(self, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f'noise_density must be in [0, 1], got {value!r}')
        self._noise_density = float(value)
        self.reset_seed()

    def reset_seed(self) -> None:
        """Re-seed the test-time generator used for samples without ``img_path``/``sample_idx``."""
        self._fallback_generator.manual_seed(self.seed)

    @contextlib.contextmanager
    def protocol(self,
                 missing: Optional[Sequence[str]] = None,
                 ratio: Optional[float] = None,
                 noise: Optional[float] = None) -> Iterator['MultiModalSegDataPreProcessor']:
        """Run the ``with`` block under one setting of the missing/noisy-modality protocol.

        Sets ``missing_modalities``, ``missing_ratio`` and ``noise_density`` for the block and
        puts the previous values back afterwards, also when the block raises or a value is
        refused (then nothing has run). Setting them re-seeds the generator of the samples
        without ``img_path``/``sample_idx`` (:meth:`reset_seed`), on entry and on exit, so each
        block starts from the same random state. The settings of the robustness protocols:

        - EMM, subset s: ``missing`` = the modalities outside s, ``ratio=1.0``, ``noise=0.0``;
        - RMM@r: as EMM with ``ratio=r``;
        - NM@d: ``missing=()``, ``ratio=1.0``, ``noise=d``.

        Args:
            missing (Sequence[str] | str, optional): Modalities zeroed after normalisation
                (``missing_modalities``); at least one modality must remain. Defaults to None
                (keep the current value).
            ratio (float, optional): In (0, 1]; 1.0 zeroes the whole missing modalities (EMM),
                less zeroes each of their elements with this probability (RMM)
                (``missing_ratio``). Defaults to None (keep the current value).
            noise (float, optional): In [0, 1]; salt-and-pepper density on every modality (NM)
                (``noise_density``). Defaults to None (keep the current value).

        Yields:
            MultiModalSegDataPreProcessor: This preprocessor, under the setting.

        Raises:
            ValueError: An unknown modality, every modality missing, or a ratio or density out
                of range (the message names the argument and the allowed values).

        Example:
            >>> pre = model.data_preprocessor
            >>> with pre.protocol(missing=['depth', 'lidar'], ratio=0.5):
            ...     outputs = model.test_step(data_batch)  # RMM@0.5 on rgb+event
        """
        saved = (self._missing_modalities, self._missing_ratio, self._noise_density)
        try:
            if missing is not None:
                self.missing_modalities = missing
            if ratio is not None:
                self.missing_ratio = ratio
            if noise is not None:
                self.noise_density = noise
            yield self
        finally:
            self.missing_modalities, self.missing_ratio, self.noise_density = saved

    def rng_state_dict(self) -> dict:
        """The state of the generators this module owns, for checkpoints (see
        :class:`~equiseg_mm.engine.RNGStateHook`; training-time draws use torch's global
        generator, which the hook saves itself).

        Returns:
            dict: ``fallback_generator``, a byte tensor.
        """
        return {'fallback_generator': self._fallback_generator.get_state()}

    def load_rng_state_dict(self, state: dict) -> None:
        """Restore what :meth:`rng_state_dict` returned (a missing entry changes nothing)."""
        if 'fallback_generator' in state:
            self._fallback_generator.set_state(state['fallback_generator'].cpu())

    # --- helpers ------------------------------------------------------------------------------
    def _uniform(self, shape: tuple, device: torch.device,
                 generator: Optional[torch.Generator]) -> torch.Tensor:
        """Uniform draws of ``shape`` (C, H, W), one per value or one per modality pixel."""
        if self.random_unit == 'value':
            return torch.rand(shape, generator=generator).to(device) if generator is not None \
                else torch.rand(shape, device=device)
        parts = []
        for name in self._modalities:
            sl = self.slices[name]
            one = torch.rand((1, ) + tuple(shape[1:]), generator=generator).to(device) \
                if generator is not None else torch.rand((1, ) + tuple(shape[1:]), device=device)
            parts.append(one.expand(sl.stop - sl.start, -1, -1))
        return torch.cat(parts, dim=0)

    def _generator(self, data_sample: Any, salt: str,
                   training: bool) -> Optional[torch.Generator]:
        if training:
            return None
        seed = _sample_seed(self.seed, data_sample, salt)
        if seed is None:
            return self._fallback_generator
        return torch.Generator().manual_seed(seed)

    def _missing_mask(self, shape: tuple, device: torch.device,
                      generator: Optional[torch.Generator]) -> torch.Tensor:
        """Boolean (C, H, W) mask of the values to zero for the missing modalities."""
        mask = torch.zeros(shape, dtype=torch.bool, device=device)
        for name in self._missing_modalities:
            mask[self.slices[name]] = True
        if self._missing_ratio < 1.0:
            mask &= self._uniform(shape, device, generator) < self._missing_ratio
        return mask

    def _dropout_keep(self, num_samples: int,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Boolean (B, N) CPU tensor of the modalities kept by modality dropout (the rule in
        the class docs), drawn on the CPU from ``generator`` (torch's global one when None)."""
        present = torch.tensor([m not in self._missing_modalities for m in self._modalities])
        rates = torch.tensor([self.dropout_rates[m] for m in self._modalities])
        keep = torch.rand(num_samples, len(self._modalities), generator=generator) >= rates
        keep &= present
        candidates = torch.nonzero(present).flatten()
        keep_rates = 1.0 - rates[candidates]
        uniform = bool((keep_rates == keep_rates[0]).all())
        for b in torch.nonzero(~keep.any(dim=1)).flatten().tolist():
            if uniform:
                pick = torch.randint(len(candidates), (1, ), generator=generator)
            else:
                pick = torch.multinomial(keep_rates, 1, generator=generator)
            keep[b, candidates[pick]] = True
        return keep

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        """Flip, add noise, normalise, zero modalities; mmseg's forward pads and stacks.

        Args:
            data (dict): Data sampled from the dataloader: ``inputs`` (list of (C, H, W) tensors)
                and ``data_samples``.
            training (bool): Whether to enable training-time behaviour (modality dropout,
                global-generator randomness). Defaults to False.

        Returns:
            dict: ``inputs`` (B, C, H, W) float tensor and ``data_samples``.
        """
        data = self.cast_data(data)  # type: ignore
        inputs = data['inputs']
        data_samples = data.get('data_samples', None)
        if training:
            assert data_samples is not None, 'During training, `data_samples` must be defined.'
        for idx, _input in enumerate(inputs):
            if _input.shape[0] != self.total_channels:
                raise ValueError(
                    f'input {idx} has {_input.shape[0]} channels but channels={self.channels} '
                    f'for modalities={self._modalities} sums to {self.total_channels}; set '
                    f'`channels` to match the stacked image')
        samples = data_samples if data_samples is not None else [None] * len(inputs)
        for sample in samples:
            names = (getattr(sample, 'metainfo', None) or {}).get('modalities')
            if names is not None and list(names) != self._modalities:
                raise ValueError(
                    f'the sample {sample.metainfo.get("img_path", "")!r} stacks modalities '
                    f'{list(names)} but the data preprocessor expects {self._modalities}: name '
                    'the same modalities in the same order in the dataset and the model')

        outputs = []
        for _input, sample in zip(inputs, samples):
            _input = _input.float()
            if self.bgr_to_rgb and self.bgr_modalities:
                _input = _input[self._bgr_order]
            if self._noise_density > 0:
                draws = self._uniform(_input.shape, _input.device,
                                      self._generator(sample, 'noise', training))
                pepper = draws < self._noise_density / 2
                salt = (draws < self._noise_density) & ~pepper
                _input = _input.masked_fill(pepper, 0.0).masked_fill(salt, self.noise_max)
            _input = (_input - self.mean) / self.std
            if self._missing_modalities:
                mask = self._missing_mask(_input.shape, _input.device,
                                          self._generator(sample, 'missing', training))
                _input = _input.masked_fill(mask, 0.0)
            outputs.append(_input)
        inputs = outputs

        if training and any(r > 0 for r in self.dropout_rates.values()):
            keep = self._dropout_keep(len(inputs))
            for b in range(len(inputs)):
                for n, name in enumerate(self._modalities):
                    if not keep[b, n] and name not in self._missing_modalities:
                        inputs[b][self.slices[name]] = 0.0

        if not training and not all(i.shape[1:] == inputs[0].shape[1:] for i in inputs):
            raise ValueError('the images of a test batch must have the same size, got '
                             f'{[tuple(i.shape[1:]) for i in inputs]}')
        # mmseg's own tail (no flip, no normalisation, see __init__): pad and stack the batch,
        # with the batch augments while training and the test_cfg padding while testing
        return super().forward(dict(inputs=inputs, data_samples=data_samples), training)


def is_multimodal_preprocessor(obj: Any) -> bool:
    """Whether ``obj`` is a data preprocessor of the missing/noisy-modality protocol.

    The one check the test loop, the inference API and the visualisation share: a
    :class:`MultiModalSegDataPreProcessor` (or a subclass of it).

    Args:
        obj (Any): The object to check, e.g. ``model.data_preprocessor``.

    Returns:
        bool: True for a :class:`MultiModalSegDataPreProcessor`.
    """
    return isinstance(obj, MultiModalSegDataPreProcessor)


def get_multimodal_preprocessor(model: nn.Module,
                                user: str = 'this function') -> MultiModalSegDataPreProcessor:
    """The data preprocessor of ``model`` (unwrapped from DDP and the like), checked.

    Args:
        model (nn.Module): A segmentor or a wrapper of one.
        user (str): Who needs it, for the error message. Defaults to 'this function'.

    Returns:
        MultiModalSegDataPreProcessor: ``model.data_preprocessor``.

    Raises:
        TypeError: The model's data preprocessor is not a
            :class:`MultiModalSegDataPreProcessor` (names ``user`` and the type found).
    """
    pre = getattr(unwrap_model(model), 'data_preprocessor', None)
    if not is_multimodal_preprocessor(pre):
        raise TypeError(f"{user} needs a model whose data_preprocessor is a "
                        f"MultiModalSegDataPreProcessor (or a subclass; set "
                        f"model.data_preprocessor=dict(type='MultiModalSegDataPreProcessor', "
                        f"modalities=[...]) in the config), got {type(pre).__name__}")
    return pre

"""Data preprocessor for stacked multimodal inputs, with the missing/noisy-modality protocols."""
import contextlib
from collections.abc import Mapping
from numbers import Number
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS

from ..utils import sample_desc, seed_from, unwrap_model
from ..utils.modalities import IMAGENET_MEAN, IMAGENET_STD, ModalitySpec, check_names

__all__ = ['MultiModalSegDataPreProcessor', 'get_multimodal_preprocessor',
           'is_multimodal_preprocessor']

_RANDOM_UNITS = ('value', 'pixel')

MeanStd = Optional[Union[Sequence[Number], Dict[str, Sequence[Number]]]]
DropoutRates = Union[float, Dict[str, float]]


class _Setting(NamedTuple):
    """One setting of the missing/noisy-modality protocol."""
    missing: Tuple[str, ...]
    ratio: float
    noise: float


def _check_setting(spec: ModalitySpec, current: _Setting, missing: Any, ratio: Any,
                   noise: Any) -> _Setting:
    """The setting with the given values (None keeps the current one), validated."""
    if missing is not None:
        missing = spec.select(missing, 'modality in missing_modalities')
        if len(missing) == len(spec.names):
            raise ValueError(f'missing_modalities {list(missing)} leaves no modality; at least '
                             f'one of {list(spec.names)} must remain')
    if ratio is not None and not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f'missing_ratio must be in (0, 1], got {ratio!r}')
    if noise is not None and not 0.0 <= float(noise) <= 1.0:
        raise ValueError(f'noise_density must be in [0, 1], got {noise!r}')
    return _Setting(current.missing if missing is None else missing,
                    current.ratio if ratio is None else float(ratio),
                    current.noise if noise is None else float(noise))


def _dropout_rates(modality_dropout: DropoutRates, never_drop: Sequence[str],
                   spec: ModalitySpec) -> Dict[str, float]:
    """Validate ``modality_dropout`` and ``never_drop``; the drop rate of every modality."""

    def rate(value, key):
        if isinstance(value, bool) or not isinstance(value, Number) \
                or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f'{key} must be a number in [0, 1], got {value!r}')
        return float(value)

    if isinstance(modality_dropout, Mapping):
        check_names([str(k) for k in modality_dropout], spec.names, 'modality in modality_dropout')
        rates = {m: 0.0 for m in spec.names}
        rates.update({str(k): rate(v, f'modality_dropout[{str(k)!r}]')
                      for k, v in modality_dropout.items()})
    else:
        rates = dict.fromkeys(spec.names, rate(modality_dropout, 'modality_dropout'))
    if isinstance(never_drop, str) or not isinstance(never_drop, (Sequence, set, frozenset)):
        raise ValueError(f'never_drop must be a list of modality names, got {never_drop!r}')
    check_names([str(m) for m in never_drop], spec.names, 'modality in never_drop')
    if isinstance(modality_dropout, Mapping):
        clash = [m for m in never_drop if rates[m] > 0]
        if clash:
            raise ValueError(f'modalities {clash} are in never_drop but have a drop rate in '
                             f'modality_dropout {dict(modality_dropout)}; give one or the other')
    rates.update(dict.fromkeys(never_drop, 0.0))
    return rates


def _dropout_keep(rates: torch.Tensor, present: torch.Tensor, num_samples: int,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The modality-dropout rule: a boolean (B, N) CPU tensor of the modalities each sample keeps.

    Each present modality m is dropped with probability ``rates[m]``, independently. When that
    would drop every present modality of a sample, exactly one is kept instead, drawn in
    proportion to its keep rate 1 - r_m (uniformly when those rates are all equal). So a
    sample never loses all its modalities, r_m = 0 means never dropped, and r_m = 1 means kept
    only when every present modality has r_m = 1. Draws come from ``generator`` (torch's global
    CPU generator when None).
    """
    keep = torch.rand(num_samples, len(rates), generator=generator) >= rates
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


@MODELS.register_module()
class MultiModalSegDataPreProcessor(SegDataPreProcessor):
    """Pre-processor for modalities stacked along the channel axis.

    Per sample, in this order: flip the ``bgr_modalities`` from BGR to RGB (``bgr_to_rgb``),
    add salt-and-pepper noise to every modality (NM, ``noise_density``), normalise each modality
    with its own mean and std, zero the missing modalities (EMM) or a random part of them (RMM,
    ``missing_ratio`` < 1), and while training drop random modalities (``modality_dropout``, the
    rule of :func:`_dropout_keep`; a dropped modality is zeroed like a missing one). Then
    :meth:`SegDataPreProcessor.forward` pads and stacks the batch (with ``batch_augments``).

    ``missing_modalities``, ``missing_ratio`` and ``noise_density`` form the protocol setting
    (the config values by default, read-only attributes); :meth:`protocol` is the one way to
    change it for a while.

    Randomness: while training, torch's global generator (the runner's seed governs it). While
    testing, RMM masks and NM noise come from a generator seeded with ``seed`` and the sample's
    ``img_path`` (else ``sample_idx``), so a pass is reproducible whatever the batching, and
    the RMM masks of a sample are nested across ratios. Samples with neither key draw from a
    generator re-seeded with ``seed`` whenever :meth:`protocol` sets or restores a value.

    Args:
        modalities (Sequence[str]): Modality names in stacking order.
        channels (Sequence[int], optional): Channels per modality. Defaults to None (3 each).
        mean (Sequence[Number] | dict, optional): Per-channel mean: a dict name -> list, or one
            list for every modality. Defaults to None (the ImageNet mean for 3-channel
            modalities, its average for other channel counts).
        std (Sequence[Number] | dict, optional): Per-channel std, as ``mean``. Defaults to None.
        size (tuple, optional): Fixed padding size. Defaults to None.
        size_divisor (int, optional): The divisor of the padded size. Defaults to None; with
            neither ``size`` nor ``size_divisor`` a training batch is padded to its largest
            sample.
        pad_val (Number): Padding value of the inputs. Defaults to 0.
        seg_pad_val (Number): Padding value of the segmentation maps. Defaults to 255.
        bgr_to_rgb (bool): Flip the channels of the ``bgr_modalities``. Defaults to False.
        rgb_modality (str): The colour modality (what pictures blend on). Defaults to 'rgb'.
        bgr_modalities (Sequence[str], optional): The modalities ``bgr_to_rgb`` flips.
            Defaults to None: every 3-channel modality, since cv2 decodes every 3-channel file
            in BGR order and the flip restores the file's own order.
        missing_modalities (Sequence[str]): Modalities zeroed after normalisation; at least one
            must remain. Defaults to ().
        missing_ratio (float): In (0, 1]. 1.0 zeroes the whole missing modalities (EMM); less
            zeroes each of their elements with this probability (RMM). Defaults to 1.0.
        noise_density (float): In [0, 1]. Salt-and-pepper density on every modality before
            normalisation (NM): half pepper (0), half salt (``noise_max``). Defaults to 0.0.
        noise_max (float): Salt value. Defaults to 255.0.
        random_unit (str): What one RMM/NM draw covers: 'value' (each channel of each pixel, as
            skimage's salt-and-pepper) or 'pixel' (all channels of one modality at one pixel).
            The protocol papers do not say; 'value' is this project's choice. Defaults to 'value'.
        modality_dropout (float | dict): Training-only drop rates in [0, 1]: one for every
            modality, or a dict name -> rate where unnamed modalities are never dropped.
            Defaults to 0.0.
        never_drop (Sequence[str] | str): Modalities never dropped; naming one that a
            ``modality_dropout`` dict gives a rate above 0 is an error. Defaults to ().
        seed (int): Seed of the test-time RMM/NM randomness. Defaults to 0.
        max_normalised (float, optional): A modality whose normalised values of a sample reach
            this many standard deviations from its mean stops with an error that names the
            sample, the modality, its statistics and the fix: its mean/std do not fit the data
            (e.g. a 16-bit depth PNG with 8-bit statistics; 8-bit data with ImageNet
            statistics stays within 3). ``tools/analysis_tools/modality_stats.py`` computes the
            statistics of a split. None skips the check. Defaults to 50.
        batch_augments (list[dict], optional): Batch-level augmentations. Defaults to None.
        test_cfg (dict, optional): Padding at test time (``size`` / ``size_divisor``).
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
                 max_normalised: Optional[float] = 50.,
                 batch_augments: Optional[List[dict]] = None,
                 test_cfg: Optional[dict] = None) -> None:
        if size is not None and size_divisor is not None:
            raise ValueError(f'give at most one of size ({size}) and size_divisor '
                             f'({size_divisor}), not both')
        # mmseg's forward only pads and stacks (flip and normalisation are per modality, here);
        # a divisor of 1 pads a training batch to its largest sample (stack_batch needs one)
        super().__init__(mean=None, std=None, size=size,
                         size_divisor=1 if size is None and size_divisor is None
                         else size_divisor,
                         pad_val=pad_val, seg_pad_val=seg_pad_val, bgr_to_rgb=False,
                         rgb_to_bgr=False, batch_augments=batch_augments, test_cfg=test_cfg)
        self.spec = spec = ModalitySpec(modalities, channels)
        self.max_normalised = max_normalised

        if bgr_modalities is None:
            bgr_modalities = [m for m, c in zip(spec.names, spec.channels) if c == 3]
        self.bgr_modalities = list(spec.select(bgr_modalities, 'modality in bgr_modalities'))
        for name in self.bgr_modalities:
            width = spec.channels[spec.names.index(name)]
            if bgr_to_rgb and width != 3:
                raise ValueError(f'bgr_to_rgb needs the bgr_modalities to have 3 channels; '
                                 f'{name!r} has {width}')
        self.bgr_to_rgb = bool(bgr_to_rgb)
        self.rgb_modality = rgb_modality
        order = list(range(spec.total))  # the channel permutation of bgr_to_rgb
        for name in self.bgr_modalities:
            order[spec.slices[name]] = order[spec.slices[name]][::-1]
        self._bgr_order = order

        mean_values = spec.per_channel(mean, 'mean', IMAGENET_MEAN)
        std_values = spec.per_channel(std, 'std', IMAGENET_STD)
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
        self.dropout_rates = _dropout_rates(modality_dropout, never_drop, spec)
        self.never_drop = tuple(m for m in spec.names if m in never_drop)
        self.noise_max = float(noise_max)
        self.seed = int(seed)
        self._fallback_generator = torch.Generator()
        self._setting = _Setting((), 1.0, 0.0)
        self._set(missing_modalities, missing_ratio, noise_density)

    # --- protocol setting: the config values, changed for a while by protocol() -------------
    @property
    def modalities(self) -> List[str]:
        """list[str]: The modality names in stacking order."""
        return list(self.spec.names)

    @property
    def missing_modalities(self) -> Tuple[str, ...]:
        """tuple[str]: Modalities zeroed after normalisation, in stacking order."""
        return self._setting.missing

    @property
    def missing_ratio(self) -> float:
        """float: In (0, 1]; 1.0 zeroes whole modalities (EMM), less zeroes elements (RMM)."""
        return self._setting.ratio

    @property
    def noise_density(self) -> float:
        """float: In [0, 1]; salt-and-pepper density on every modality (NM)."""
        return self._setting.noise

    def _set(self, missing: Any = None, ratio: Any = None, noise: Any = None) -> None:
        """Validate and apply a setting; a value given re-seeds the fallback generator."""
        self._setting = _check_setting(self.spec, self._setting, missing, ratio, noise)
        if any(v is not None for v in (missing, ratio, noise)):
            self._fallback_generator.manual_seed(self.seed)

    @contextlib.contextmanager
    def protocol(self,
                 missing: Optional[Sequence[str]] = None,
                 ratio: Optional[float] = None,
                 noise: Optional[float] = None) -> Iterator['MultiModalSegDataPreProcessor']:
        """Run the ``with`` block under one setting of the missing/noisy-modality protocol.

        The previous setting comes back afterwards, also when the block raises or a value is
        refused (then the block does not run). Entering with a value, and leaving, re-seed the
        generator of the samples without ``img_path``/``sample_idx``. The robustness protocols:

        - EMM, subset s: ``missing`` = the modalities outside s, ``ratio=1.0``, ``noise=0.0``;
        - RMM@r: as EMM with ``ratio=r``;
        - NM@d: ``missing=()``, ``ratio=1.0``, ``noise=d``.

        Args:
            missing (Sequence[str] | str, optional): ``missing_modalities``; at least one
                modality must remain. Defaults to None (keep the current value).
            ratio (float, optional): ``missing_ratio``, in (0, 1]. Defaults to None (keep).
            noise (float, optional): ``noise_density``, in [0, 1]. Defaults to None (keep).

        Yields:
            MultiModalSegDataPreProcessor: This preprocessor, under the setting.

        Raises:
            ValueError: An unknown modality, every modality missing, or a ratio or density out
                of range (the message names the argument and the allowed values).

        Example:
            >>> with model.data_preprocessor.protocol(missing=['depth', 'lidar'], ratio=0.5):
            ...     outputs = model.test_step(data_batch)  # RMM@0.5 on rgb+event
        """
        saved = self._setting
        try:
            self._set(missing, ratio, noise)
            yield self
        finally:
            self._set(*saved)

    def rng_state_dict(self) -> dict:
        """The state of the generator this module owns, for checkpoints (training draws use
        torch's global generator, which :class:`~equiseg_mm.engine.RNGStateHook` saves itself).

        Returns:
            dict: ``fallback_generator``, a byte tensor.
        """
        return {'fallback_generator': self._fallback_generator.get_state()}

    def load_rng_state_dict(self, state: dict) -> None:
        """Restore what :meth:`rng_state_dict` returned (a missing entry changes nothing)."""
        if 'fallback_generator' in state:
            self._fallback_generator.set_state(state['fallback_generator'].cpu())

    # --- randomness ---------------------------------------------------------------------------
    def _generator(self, data_sample: Any, salt: str,
                   training: bool) -> Optional[torch.Generator]:
        """None (the global generator) while training; else one seeded by the sample."""
        if training:
            return None
        meta = getattr(data_sample, 'metainfo', None) or {}
        key = meta.get('img_path', meta.get('sample_idx'))
        if key is None:
            return self._fallback_generator
        return torch.Generator().manual_seed(seed_from(self.seed, salt, key, bits=63))

    def _uniform(self, shape: tuple, device: torch.device,
                 generator: Optional[torch.Generator]) -> torch.Tensor:
        """Uniform draws of ``shape`` (C, H, W), one per value or one per modality pixel."""

        def rand(size):
            return torch.rand(size, generator=generator).to(device) if generator is not None \
                else torch.rand(size, device=device)

        if self.random_unit == 'value':
            return rand(shape)
        return torch.cat([rand((1, ) + tuple(shape[1:])).expand(c, -1, -1)
                          for c in self.spec.channels], dim=0)

    def _missing_mask(self, shape: tuple, device: torch.device,
                      generator: Optional[torch.Generator]) -> torch.Tensor:
        """Boolean (C, H, W) mask of the values to zero for the missing modalities."""
        mask = torch.zeros(shape, dtype=torch.bool, device=device)
        for name in self.missing_modalities:
            mask[self.spec.slices[name]] = True
        if self.missing_ratio < 1.0:
            mask &= self._uniform(shape, device, generator) < self.missing_ratio
        return mask

    def _dropout_keep(self, num_samples: int,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """:func:`_dropout_keep` for this preprocessor's rates and present modalities."""
        names = self.spec.names
        present = torch.tensor([m not in self.missing_modalities for m in names])
        rates = torch.tensor([self.dropout_rates[m] for m in names])
        return _dropout_keep(rates, present, num_samples, generator)

    def _check_inputs(self, inputs: List[torch.Tensor], samples: list) -> None:
        spec = self.spec
        for idx, _input in enumerate(inputs):
            if _input.shape[0] != spec.total:
                raise ValueError(
                    f'input {idx} has {_input.shape[0]} channels but channels='
                    f'{list(spec.channels)} for modalities={self.modalities} sums to '
                    f'{spec.total}; set `channels` to match the stacked image')
        for sample in samples:
            names = (getattr(sample, 'metainfo', None) or {}).get('modalities')
            if names is not None and tuple(names) != spec.names:
                raise ValueError(
                    f'the sample {sample.metainfo.get("img_path", "")!r} stacks modalities '
                    f'{list(names)} but the data preprocessor expects {self.modalities}: name '
                    'the same modalities in the same order in the dataset and the model')

    def _check_normalisation(self, raw: Tensor, normed: Tensor, sample: Any) -> None:
        """Raise ``ValueError`` when a modality's normalised values leave
        ``max_normalised`` (see the class docs)."""
        if normed.abs().amax() < self.max_normalised:  # one reduction for the usual case
            return
        for name, sl in self.spec.slices.items():
            if normed[sl].abs().amax() < self.max_normalised:
                continue
            values = raw[sl].flatten(1)
            where = sample_desc(sample.metainfo) if sample is not None else 'a sample'
            fmt = lambda t: [round(float(v), 2) for v in t.flatten()]  # noqa: E731
            raise ValueError(
                f'{where}: modality {name!r} has values in [{float(values.min()):g}, '
                f'{float(values.max()):g}], {float(normed[sl].abs().amax()):.0f} standard '
                f'deviations from its configured mean {fmt(self.mean[sl])} / std '
                f'{fmt(self.std[sl])}: these statistics do not fit the data (a 16-bit '
                'image with 8-bit statistics?). This sample\'s own mean / std per channel: '
                f'{fmt(values.mean(1))} / {fmt(values.std(1))}. Set '
                f'model.data_preprocessor.mean/std for {name!r} (a dict by modality) to the '
                'statistics of your data: tools/analysis_tools/modality_stats.py CONFIG '
                'computes them over a split; max_normalised=None skips this check.')

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        """Flip, add noise, normalise, zero modalities; mmseg's forward pads and stacks.

        Args:
            data (dict): ``inputs`` (list of (C, H, W) tensors) and ``data_samples``.
            training (bool): Training-time behaviour (modality dropout, global-generator
                randomness). Defaults to False.

        Returns:
            dict: ``inputs`` (B, C, H, W) float tensor and ``data_samples``.
        """
        data = self.cast_data(data)  # type: ignore
        inputs = data['inputs']
        data_samples = data.get('data_samples', None)
        if training:
            assert data_samples is not None, 'During training, `data_samples` must be defined.'
        samples = data_samples if data_samples is not None else [None] * len(inputs)
        self._check_inputs(inputs, samples)
        missing, noise = self.missing_modalities, self.noise_density

        outputs = []
        for _input, sample in zip(inputs, samples):
            _input = _input.float()
            if self.bgr_to_rgb and self.bgr_modalities:
                _input = _input[self._bgr_order]
            if noise > 0:
                draws = self._uniform(_input.shape, _input.device,
                                      self._generator(sample, 'noise', training))
                pepper = draws < noise / 2
                salt = (draws < noise) & ~pepper
                _input = _input.masked_fill(pepper, 0.0).masked_fill(salt, self.noise_max)
            raw = _input
            _input = (_input - self.mean) / self.std
            if self.max_normalised is not None:
                self._check_normalisation(raw, _input, sample)
            if missing:
                mask = self._missing_mask(_input.shape, _input.device,
                                          self._generator(sample, 'missing', training))
                _input = _input.masked_fill(mask, 0.0)
            outputs.append(_input)

        if training and any(r > 0 for r in self.dropout_rates.values()):
            keep = self._dropout_keep(len(outputs))
            for b, n in torch.nonzero(~keep).tolist():
                name = self.spec.names[n]
                if name not in missing:
                    outputs[b][self.spec.slices[name]] = 0.0

        if not training and not all(o.shape[1:] == outputs[0].shape[1:] for o in outputs):
            raise ValueError('the images of a test batch must have the same size, got '
                             f'{[tuple(o.shape[1:]) for o in outputs]}')
        return super().forward(dict(inputs=outputs, data_samples=data_samples), training)


def is_multimodal_preprocessor(obj: Any) -> bool:
    """Whether ``obj`` (e.g. ``model.data_preprocessor``) is a
    :class:`MultiModalSegDataPreProcessor` or a subclass of it."""
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
        TypeError: It is not a :class:`MultiModalSegDataPreProcessor` (names ``user`` and the
            type found).
    """
    pre = getattr(unwrap_model(model), 'data_preprocessor', None)
    if not is_multimodal_preprocessor(pre):
        raise TypeError(f"{user} needs a model whose data_preprocessor is a "
                        f"MultiModalSegDataPreProcessor (or a subclass; set "
                        f"model.data_preprocessor=dict(type='MultiModalSegDataPreProcessor', "
                        f"modalities=[...]) in the config), got {type(pre).__name__}")
    return pre

"""The one description of a sample's modalities, shared by dataset, preprocessor, loop and metric.

Modalities are stacked along the channel axis in a fixed order. :class:`ModalitySpec` holds that
order and the channels of each modality, validated once; every part checks modality names and
resolves per-modality statistics through it.
"""
from itertools import combinations
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

#: ImageNet statistics, the default mean/std of every modality (as in the CMNeXt reference).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def check_names(names: Sequence[str], known: Sequence[str], what: str = 'modality') -> None:
    """Raise ``ValueError`` naming every name not in ``known`` and the allowed values."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f'unknown {what} {unknown}; allowed values are {list(known)}')


def modality_names(names: Sequence[str]) -> Tuple[str, ...]:
    """``names`` as a tuple, checked to be a non-empty list of unique names."""
    if isinstance(names, str) or not names:
        raise ValueError(f'modalities must be a non-empty list of names, got {names!r}')
    names = tuple(str(n) for n in names)
    if len(set(names)) != len(names):
        raise ValueError(f'modalities must be unique names, got {list(names)}')
    return names


def channel_slices(modalities: Sequence[str], channels: Sequence[int]) -> Dict[str, slice]:
    """Map each modality name to its channel slice in the stacked array.

    Args:
        modalities (Sequence[str]): Modality names, in stacking order.
        channels (Sequence[int]): Channels per modality, same order.

    Returns:
        dict[str, slice]: ``{'rgb': slice(0, 3), 'depth': slice(3, 6), ...}``.
    """
    if len(modalities) != len(channels):
        raise ValueError(f'got {len(modalities)} modalities {list(modalities)} but '
                         f'{len(channels)} channel counts {list(channels)}; give one per modality')
    modality_names(modalities)
    out, start = {}, 0
    for name, ch in zip(modalities, channels):
        if int(ch) < 1:
            raise ValueError(f'modality {name!r} has {ch} channels; it needs at least 1')
        out[name] = slice(start, start + int(ch))
        start += int(ch)
    return out


def modality_subsets(modalities: Sequence[str]) -> List[Tuple[str, ...]]:
    """Every non-empty subset of ``modalities`` (2^N - 1), largest first, in stacking order.

    >>> modality_subsets(['rgb', 'depth'])
    [('rgb', 'depth'), ('rgb',), ('depth',)]
    """
    mods = list(modalities)
    return [c for k in range(len(mods), 0, -1) for c in combinations(mods, k)]


def subset_name(subset: Sequence[str]) -> str:
    """Canonical key of a modality subset, e.g. ``'rgb+depth'``."""
    return '+'.join(subset)


class ModalitySpec:
    """Modality names in stacking order and the channels of each, validated once.

    Args:
        names (Sequence[str]): Modality names in stacking order: unique, at least one.
        channels (Sequence[int], optional): Channels per modality. Defaults to None (3 each).

    Attributes:
        names (tuple[str]): The names in stacking order.
        channels (tuple[int]): Channels per modality.
        slices (dict[str, slice]): Each modality's channels in the stacked array.
        total (int): Channels of the stacked array.
    """

    def __init__(self, names: Sequence[str], channels: Optional[Sequence[int]] = None) -> None:
        self.names = modality_names(names)
        self.channels = ((3, ) * len(self.names) if channels is None
                         else tuple(int(c) for c in channels))
        self.slices = channel_slices(self.names, self.channels)
        self.total = sum(self.channels)

    def select(self, names: Union[str, Sequence[str]],
               what: str = 'modality') -> Tuple[str, ...]:
        """``names`` (one name or several) checked and put in stacking order, without repeats."""
        names = (names, ) if isinstance(names, str) else tuple(names)
        check_names(names, self.names, what)
        return tuple(n for n in self.names if n in names)

    def per_channel(self, stats: Union[None, Sequence[float], Mapping[str, Sequence[float]]],
                    key: str, default: Sequence[float]) -> List[float]:
        """Expand a per-modality statistic (e.g. ``mean``) into one value per stacked channel.

        Args:
            stats (Sequence[float] | dict, optional): One list for every modality, a dict
                name -> list, or None: ``default`` for every 3-channel modality and, a choice of
                this project, the average of ``default`` for other channel counts.
            key (str): The argument's name, for errors.
            default (Sequence[float]): Three values.

        Returns:
            list[float]: ``total`` values.
        """
        if stats is None:
            stats = {m: list(default) if c == 3 else [sum(default) / 3] * c
                     for m, c in zip(self.names, self.channels)}
        elif isinstance(stats, Mapping):
            check_names(list(stats), self.names, f'modality in {key}')
            missing = [m for m in self.names if m not in stats]
            if missing:
                raise ValueError(f'{key} has no entry for modalities {missing}; give one list '
                                 f'per modality in {list(self.names)}')
        else:
            stats = {m: stats for m in self.names}
        values = []
        for name, ch in zip(self.names, self.channels):
            if len(stats[name]) != ch:
                raise ValueError(f'{key} for modality {name!r} has {len(stats[name])} values '
                                 f'{list(stats[name])} but the modality has {ch} channels')
            values.extend(float(v) for v in stats[name])
        return values

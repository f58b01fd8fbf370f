"""Small helpers shared by every part that reasons about modalities.

A sample's modalities are stacked along the channel axis in the configured order; these helpers
turn a modality list plus channels per modality into channel slices, enumerate modality subsets
for the missing-modality protocol, and validate modality names with an error that names them.
"""
from itertools import combinations
from typing import Dict, List, Sequence, Tuple


def check_modalities(names: Sequence[str], known: Sequence[str], what: str = 'modality') -> None:
    """Raise ``ValueError`` naming every unknown modality and the allowed ones."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f'unknown {what} {unknown}; allowed values are {list(known)}')


def channel_slices(modalities: Sequence[str],
                   channels: Sequence[int]) -> Dict[str, slice]:
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
    if len(set(modalities)) != len(modalities):
        raise ValueError(f'modality names must be unique, got {list(modalities)}')
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

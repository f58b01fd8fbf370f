"""Stable seeds derived from names, so that random draws follow a sample, not the run order."""
import hashlib


def seed_from(*parts, bits: int = 64) -> int:
    """A seed that depends only on ``parts``: the same parts give the same seed in every process.

    The parts are joined as ``'|'.join(str(p) for p in parts)``; the seed is the first 8 bytes
    of the SHA-256 digest of that text, read little-endian, keeping the low ``bits`` bits
    (Python's ``hash`` is salted per process, so it cannot serve).

    >>> seed_from('motionblur', 'img/a.png') == seed_from('motionblur', 'img/a.png')
    True

    Args:
        *parts: Anything with a stable ``str`` (seeds, names, paths, indices).
        bits (int): Width of the seed, 1..64; 63 fits a signed 64-bit integer (e.g.
            ``torch.Generator.manual_seed``). Defaults to 64.

    Returns:
        int: A seed in ``[0, 2 ** bits)``.
    """
    if not isinstance(bits, int) or not 1 <= bits <= 64:
        raise ValueError(f'bits must be an int in 1..64, got {bits!r}')
    digest = hashlib.sha256('|'.join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], 'little') & ((1 << bits) - 1)

"""mmseg's EncoderDecoder with the model's one speed switch."""
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from ..utils.fast_path import enable_fast_path


@MODELS.register_module()
class MultiModalEncoderDecoder(EncoderDecoder):
    """:class:`mmseg.models.segmentors.EncoderDecoder` with a ``fast_path`` switch.

    With ``fast_path=True`` the built model runs the speed-ups of
    :mod:`equiseg_mm.models.utils.fast_path` (same parameters, state dict and outputs, up to
    floating-point rounding); with False it computes exactly as written in the backbone, neck
    and heads (and as mmseg's own modules). The shipped EQUISeg configs set it.

    Args:
        fast_path (bool): Enable the fast path. Defaults to False.
        **kwargs: As :class:`EncoderDecoder`.
    """

    def __init__(self, fast_path: bool = False, **kwargs) -> None:
        if not isinstance(fast_path, bool):
            raise ValueError(f'fast_path must be True or False, got {fast_path!r}')
        super().__init__(**kwargs)
        self.fast_path = fast_path
        if fast_path:
            enable_fast_path(self)

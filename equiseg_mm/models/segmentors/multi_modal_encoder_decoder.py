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

    Loading a state dict whose tensors differ in shape from the model's (e.g. a head trained for
    another number of classes) is a ``ValueError`` naming each tensor and both shapes, on every
    loading path (mmengine only warns and leaves those tensors freshly initialised). A backbone
    with ``partial_checkpoint=True`` (:class:`~equiseg_mm.models.MultiModalMiT`) allows it:
    the differing tensors keep their initialisation, as in mmengine.

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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if not getattr(self.backbone, 'partial_checkpoint', False):
            # a multimodal backbone's own check first: it names the modality lists
            check = getattr(self.backbone, '_check_checkpoint_branches', None)
            if check is not None:
                metadata = getattr(state_dict, '_metadata', {}) or {}
                check(state_dict, prefix + 'backbone.', metadata.get(prefix + 'backbone', {}))
            own = self.state_dict()
            bad = [f'{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}'
                   for k, v in ((k[len(prefix):], v) for k, v in state_dict.items()
                                if k.startswith(prefix))
                   if k in own and hasattr(v, 'shape') and v.shape != own[k].shape]
            if bad:
                classes = ' (the checkpoint was trained for another number of classes)' if any(
                    'conv_seg' in b for b in bad) else ''
                raise ValueError(
                    f'the checkpoint does not fit this model{classes}: {"; ".join(bad[:8])}'
                    f'{"; ..." if len(bad) > 8 else ""}. Use a checkpoint of this config, or set '
                    'model.backbone.partial_checkpoint=True to load what fits and leave the '
                    'rest freshly initialised')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

"""mmseg's SegFormer all-MLP head with its fusion convolution applied before the upsampling."""
from typing import List

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmseg.models.decode_heads import SegformerHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS


#: Hooks that only name trace scopes (mmengine's / fvcore's FLOP counter puts them on every
#: module while it traces): they neither read nor change values.
_SCOPE_HOOKS = ('ScopePushHook', 'ScopePopHook')


def _plain_module(module: nn.Module) -> bool:
    """Whether calling ``module`` runs nothing but its own ``forward`` (no hooks on it, apart
    from a FLOP counter's trace-scope hooks)."""
    hooks = list(module._forward_hooks.values()) + list(module._forward_pre_hooks.values())
    return all(type(hook).__name__ in _SCOPE_HOOKS for hook in hooks)


@MODELS.register_module()
class FastSegformerHead(SegformerHead):
    """:class:`mmseg.models.decode_heads.SegformerHead` computed in a cheaper order: same
    parameters, same state dict, same outputs up to floating-point rounding.

    mmseg's head maps every stage to ``channels`` (1x1 ConvModule), resizes each map to the
    first selected stage's size, concatenates them (``len(in_channels) * channels`` channels)
    and applies the fusion 1x1 convolution to the concatenation. The fusion convolution is
    linear and acts per pixel, and the resizing (bilinear, nearest, ...) is linear and acts per
    channel with the same weights for every channel, so the two commute: the fusion weight's
    slice of stage i is applied to stage i's map *at its own resolution*, and the resized
    results are summed, before the fusion's norm and activation (which see the same values, in
    training too). With EQUISeg-B0 / SegFormer-B0 at 1024 x 1024 (256 channels) that is 7.4
    instead of 19.0 GFLOPs, and the 1024-channel concatenation (256 MiB) is never built. The
    first stage's map is not resized when it already has the target size (mmseg's ``resize``
    interpolates it onto itself). Every ``SegformerHead`` checkpoint loads unchanged.

    The reordering reads the fusion convolution's weight directly. Where something wraps that
    convolution (forward hooks or pre-hooks on ``fusion_conv`` or ``fusion_conv.conv``, e.g.
    feature-capturing hooks or the hook-based ``torch.nn.utils.weight_norm``; or a ``conv``
    that is not a plain ``nn.Conv2d``, e.g. a fake-quantised one), the head runs mmseg's
    computation instead, so the result is always ``SegformerHead``'s (the trace-scope hooks of
    mmengine's FLOP counter excepted: they only name scopes, so FLOPs are counted as run).

    Args:
        interpolate_mode (str): As ``SegformerHead``. Defaults to 'bilinear'.
        **kwargs: As ``SegformerHead`` / ``BaseDecodeHead``. Use the head as
            ``decode_head=dict(type='FastSegformerHead', ...)`` wherever ``SegformerHead``
            stands (the shipped EQUISeg configs do).
    """

    def _reorder_is_exact(self) -> bool:
        fusion = self.fusion_conv
        conv = getattr(fusion, 'conv', None)
        return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1)
                and conv.stride == (1, 1) and conv.groups == 1
                and tuple(fusion.order) == ('conv', 'norm', 'act')
                and _plain_module(fusion) and _plain_module(conv))

    def forward(self, inputs: List[Tensor]) -> Tensor:
        if not self._reorder_is_exact():
            return super().forward(inputs)
        fusion = self.fusion_conv
        inputs = self._transform_inputs(inputs)
        weight = fusion.conv.weight  # (channels, n * channels, 1, 1), stage-major inputs
        size = inputs[0].shape[2:]
        out = None
        for idx, x in enumerate(inputs):
            part = F.conv2d(self.convs[idx](x),
                            weight[:, idx * self.channels:(idx + 1) * self.channels])
            if part.shape[2:] != size:
                part = resize(part, size=size, mode=self.interpolate_mode,
                              align_corners=self.align_corners)
            out = part if out is None else out + part
        if fusion.conv.bias is not None:
            out = out + fusion.conv.bias.view(1, -1, 1, 1)
        if fusion.with_norm:
            out = fusion.norm(out)
        if fusion.with_activation:
            out = fusion.activate(out)
        return self.cls_seg(out)

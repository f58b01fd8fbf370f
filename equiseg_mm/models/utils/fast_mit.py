"""Faster execution of mmseg's Mix Transformer parts, with the same parameters and outputs.

Two independent switches, each changing module classes in place (parameters, state-dict keys
and results stay the same up to floating-point rounding; tests compare both paths):

* :func:`use_fast_attention`: mmseg's ``EfficientMultiheadAttention`` calls
  ``nn.MultiheadAttention`` with the default ``need_weights=True``, which materialises and
  averages attention maps only to throw them away; the switched module passes
  ``need_weights=False`` (PyTorch then runs fused scaled-dot-product attention).
* :func:`use_channels_last`: mmseg's MiT turns its (B, L, C) token sequences into (B, C, H, W)
  maps with ``x.transpose(1, 2).reshape(B, C, H, W)``. For B = 1 (single-image inference) that
  view gets an irregular batch stride (C instead of H * W * C): PyTorch still calls it
  channels-last, but oneDNN does not recognise the layout and reorders every input and output
  of the convolutions that follow (MixFFN's 1 x 1 and depthwise 3 x 3 convolutions, the
  attention's spatial reduction, the next patch embedding). On the project's 2-core CPU the
  MixFFN of the first stage ran about 4x slower for it at 1024 x 1024. The switched modules
  build the same maps as views with regular channels-last strides (:func:`nlc_to_nchw_cl`).

Why switch classes in place instead of registering subclasses that the backbone builds:
mmseg's ``MixVisionTransformer.__init__`` builds its attention and FFN modules inside its
``TransformerEncoderLayer`` with the classes hard-coded, so building the fast ones directly would
copy both constructors, far more code than the three ``forward`` methods copied here; and the
switch also reaches MiT modules built elsewhere (the neck's attention and FFN, a
``MixVisionTransformer`` branch from a user's ``branch`` config) with the same parameters and
state-dict keys. The copied ``forward`` methods follow mmseg 1.2.2 (the pinned version);
``tests/test_models/test_utils/test_fast_mit.py`` records the hash of each of mmseg's originals
and fails, naming what to re-check, when an mmseg upgrade changes one.
"""
from typing import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from mmseg.models.backbones.mit import (EfficientMultiheadAttention, MixFFN,
                                        MixVisionTransformer)
from mmseg.models.utils import nchw_to_nlc


def nlc_to_nchw_cl(x: Tensor, hw_shape: Sequence[int]) -> Tensor:
    """(B, L, C) tokens -> (B, C, H, W) map, as a view with regular channels-last strides.

    The values equal mmseg's ``nlc_to_nchw(x, hw_shape)``; no data is copied when ``x`` is
    contiguous. Unlike mmseg's version, the batch stride is H * W * C also for B = 1, so oneDNN
    convolutions take the map as it is.
    """
    h, w = int(hw_shape[0]), int(hw_shape[1])
    b, length, c = x.shape
    if length != h * w:
        raise ValueError(f'{length} tokens do not form a {h} x {w} map')
    return to_channels_last(x.reshape(b, h, w, c).permute(0, 3, 1, 2))


def to_channels_last(x: Tensor) -> Tensor:
    """``x`` (B, C, H, W) with regular channels-last strides (a view when it already has the
    layout up to the stride of a size-1 dim, else a copy)."""
    b, c, h, w = x.shape
    strides = (h * w * c, 1, w * c, c)
    if x.stride() == strides:
        return x
    if x.is_contiguous(memory_format=torch.channels_last):
        return x.as_strided(x.shape, strides)
    return x.contiguous(memory_format=torch.channels_last)


def stack_channels_last(maps: Sequence[Tensor], dim: int = 0) -> Tensor:
    """``torch.stack(maps, dim)`` of (B, C, H, W) maps, stored with the channels innermost.

    For ``dim`` 0 or 1 (before the channels) the result has the values and shape of
    ``torch.stack`` but is a permuted view of a (..., H, W, C)-ordered buffer, so the maps it
    holds keep a channels-last layout (``torch.stack`` writes a 5-d result in plain order,
    whatever the inputs' layout). Other dims (2 to 4, or -5 to -1 as in ``torch.stack``) give
    ``torch.stack``'s own result.
    """
    if not -5 <= dim <= 4:
        raise ValueError(f'dim must be in [-5, 4] for (B, C, H, W) maps, got {dim}')
    dim %= 5
    if dim > 1:  # at or after the channel axis: the plain stack
        return torch.stack(list(maps), dim)
    stacked = torch.stack([m.permute(0, 2, 3, 1) for m in maps], dim)
    return stacked.permute(0, 1, 4, 2, 3)


class _NoWeightsMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` that never computes the (discarded) attention weights."""

    def forward(self, *args, **kwargs):
        kwargs['need_weights'] = False
        return super().forward(*args, **kwargs)


class _ChannelsLastEfficientMultiheadAttention(EfficientMultiheadAttention):
    """mmseg's efficient attention whose spatial reduction runs on a regular channels-last map."""

    def forward(self, x: Tensor, hw_shape, identity=None) -> Tensor:
        x_kv = x
        if self.sr_ratio > 1:
            x_kv = self.norm(nchw_to_nlc(self.sr(nlc_to_nchw_cl(x, hw_shape))))
        if identity is None:
            identity = x
        if self.batch_first:  # nn.MultiheadAttention here is sequence-first
            out = self.attn(query=x.transpose(0, 1), key=x_kv.transpose(0, 1),
                            value=x_kv.transpose(0, 1))[0].transpose(0, 1)
        else:
            out = self.attn(query=x, key=x_kv, value=x_kv)[0]
        return identity + self.dropout_layer(self.proj_drop(out))


class _ChannelsLastMixFFN(MixFFN):
    """mmseg's MixFFN whose convolutions run on a regular channels-last map."""

    def forward(self, x: Tensor, hw_shape, identity=None) -> Tensor:
        out = nchw_to_nlc(self.layers(nlc_to_nchw_cl(x, hw_shape)))
        if identity is None:
            identity = x
        return identity + self.dropout_layer(out)


class _ChannelsLastMixVisionTransformer(MixVisionTransformer):
    """mmseg's MiT whose stage outputs (and next patch-embedding inputs) are regular
    channels-last maps."""

    def forward(self, x: Tensor):
        outs = []
        for i, layer in enumerate(self.layers):
            x, hw_shape = layer[0](x)
            for block in layer[1]:
                x = block(x, hw_shape)
            x = nlc_to_nchw_cl(layer[2](x), hw_shape)
            if i in self.out_indices:
                outs.append(x)
        return outs


def use_fast_attention(module: nn.Module) -> int:
    """Make every mmseg ``EfficientMultiheadAttention`` inside ``module`` skip attention maps.

    This switches the class of each inner ``nn.MultiheadAttention`` to a subclass that passes
    ``need_weights=False`` (PyTorch then uses fused scaled-dot-product attention). The outputs
    are the same up to floating point; parameters and state-dict keys do not change.

    Args:
        module (nn.Module): Any module; it is changed in place.

    Returns:
        int: The number of attention modules switched.
    """
    count = 0
    for m in module.modules():
        if isinstance(m, EfficientMultiheadAttention) and type(m.attn) is nn.MultiheadAttention:
            m.attn.__class__ = _NoWeightsMultiheadAttention
            count += 1
    return count


_CHANNELS_LAST = {
    EfficientMultiheadAttention: _ChannelsLastEfficientMultiheadAttention,
    MixFFN: _ChannelsLastMixFFN,
    MixVisionTransformer: _ChannelsLastMixVisionTransformer,
}


def use_channels_last(module: nn.Module) -> int:
    """Run mmseg's MiT parts inside ``module`` on regular channels-last maps.

    Switches the class of every ``MixVisionTransformer``, ``EfficientMultiheadAttention`` and
    ``MixFFN`` (exactly those classes, not subclasses of them) to a subclass whose forward builds
    its (B, C, H, W) maps with :func:`nlc_to_nchw_cl`. Same parameters, state-dict keys and
    outputs (up to floating-point rounding: the convolutions may pick other kernels); see the
    module docstring for why it is faster.

    Args:
        module (nn.Module): Any module; it is changed in place.

    Returns:
        int: The number of modules switched.
    """
    count = 0
    for m in module.modules():
        fast = _CHANNELS_LAST.get(type(m))
        if fast is not None:
            m.__class__ = fast
            count += 1
    return count

"""The fast path: every speed-up of the model, in one place, behind one switch.

``MultiModalEncoderDecoder(fast_path=True)`` (the shipped configs set it) calls
:func:`enable_fast_path` on the built model. It changes how the model computes, never what:
parameters, state-dict keys and outputs stay those of the plain path up to floating-point
rounding (``tests/test_models/test_utils/test_fast_path.py`` compares outputs and gradients of
both paths). The speed-ups:

* **Attention without attention maps.** mmseg's ``EfficientMultiheadAttention`` calls
  ``nn.MultiheadAttention`` with ``need_weights=True``, which materialises and averages the
  attention maps only to discard them; with ``need_weights=False`` PyTorch runs fused
  scaled-dot-product attention.
* **Regular channels-last maps.** mmseg's MiT turns (B, L, C) tokens into (B, C, H, W) maps with
  ``transpose(1, 2).reshape``; at batch 1 that view has an irregular batch stride, which oneDNN
  does not recognise as channels-last, so it reorders the data around every convolution that
  follows (MixFFN, spatial reduction, next patch embedding). The fast classes build the same
  maps as views with regular strides (:func:`nlc_to_nchw_cl`), and the backbone stacks its
  outputs with the channels innermost (:func:`stack_channels_last`).
* **All primaries of a CMTB as one batch.** The self-attention and SQH scoring of every modality
  run as one batch; the per-primary maximum over the auxiliaries comes from running maxima
  (:func:`_leave_one_out_max`); sums and maxima over the modality axis are element-wise ops
  (``Tensor.sum(0)`` is slow on channels-last-strided stacks).
* **SegFormer head in a cheaper order.** The fusion 1x1 convolution is linear and per pixel and
  the resize is linear and per channel, so they commute: each stage's slice of the fusion
  weight is applied at the stage's own resolution and the resized results are summed; the
  concatenation of all stages at the first stage's size is never built.

mmseg builds MiT's attention and FFN modules inside its own constructors with fixed classes, so
the fast path switches the class of each built module to a subclass that only overrides
``forward`` (``nn.Module`` allows it; nothing else changes). The ``forward`` methods of mmseg's
``EfficientMultiheadAttention``, ``MixFFN`` and ``MixVisionTransformer`` are rewritten here
from mmseg 1.2's with the map layout as the only difference, the head's in the order above; the
equality tests are what catch an upstream change of their meaning. Switched modules: exactly
the classes in :data:`_FAST` (not user subclasses of them), and the ``nn.MultiheadAttention``
inside every ``EfficientMultiheadAttention``. A head whose fusion convolution carries hooks
(feature capture, old-style weight or spectral norm) computes in mmseg's order.

Independent of this switch, :mod:`equiseg_mm.models.utils.branch_output_cache` keeps absent
modalities from costing anything at inference (a branch fed only zeros returns its earlier
output; ``MultiModalMiT(skip_absent_branches=True)``, the default) and, through
``reuse_branch_outputs``, lets the missing-modality test run each branch at most twice per
batch. Both return the tensors the branch computed for the same input: results are unchanged.
"""
from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmseg.models.backbones.mit import (EfficientMultiheadAttention, MixFFN,
                                        MixVisionTransformer)
from mmseg.models.decode_heads import SegformerHead
from mmseg.models.utils import nchw_to_nlc, resize
from ..backbones.multi_modal_mit import MultiModalMiT
from ..necks.cmtb_neck import CMTBNeck, _CrossAttention, _CrossModalBlock


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


def nlc_to_nchw_cl(x: Tensor, hw_shape: Sequence[int]) -> Tensor:
    """mmseg's ``nlc_to_nchw``, as a view with regular channels-last strides (also at B = 1)."""
    h, w = int(hw_shape[0]), int(hw_shape[1])
    b, length, c = x.shape
    if length != h * w:
        raise ValueError(f'{length} tokens do not form a {h} x {w} map')
    return to_channels_last(x.reshape(b, h, w, c).permute(0, 3, 1, 2))


def stack_channels_last(maps: Sequence[Tensor], dim: int = 0) -> Tensor:
    """``torch.stack(maps, dim)`` (dim 0 or 1) of (B, C, H, W) maps, as a permuted view of a
    (..., H, W, C)-ordered buffer, so that every stacked map keeps a channels-last layout."""
    if dim not in (0, 1):
        raise ValueError(f'dim must be 0 or 1, got {dim}')
    return torch.stack([m.permute(0, 2, 3, 1) for m in maps], dim).permute(0, 1, 4, 2, 3)


def _sum0(x: Tensor) -> Tensor:
    out = x[0] + x[1] if x.shape[0] > 1 else x[0].clone()
    for i in range(2, x.shape[0]):
        out = out + x[i]
    return out


def _max0(x: Tensor) -> Tensor:
    out = x[0]
    for i in range(1, x.shape[0]):
        out = torch.maximum(out, x[i])
    return out


def _leave_one_out_max(x: Tensor) -> Tensor:
    """Along dim 0 (N >= 2), entry m is the max of the others, from running maxima from both
    ends: out[m] = max(max(x[:m]), max(x[m + 1:]))."""
    n = x.shape[0]
    if n == 2:
        return x.flip(0)
    before = [x[0]]  # before[i] = max(x[:i + 1])
    for i in range(1, n - 1):
        before.append(torch.maximum(before[-1], x[i]))
    after = [x[n - 1]]  # after[j] = max(x[n - 1 - j:])
    for i in range(n - 2, 0, -1):
        after.append(torch.maximum(after[-1], x[i]))
    return stack_channels_last(
        [after[n - 2]] + [torch.maximum(before[m - 1], after[n - 2 - m]) for m in range(1, n - 1)]
        + [before[n - 2]], 0)


class _NoWeightsMultiheadAttention(nn.MultiheadAttention):

    def forward(self, *args, **kwargs):
        kwargs['need_weights'] = False
        return super().forward(*args, **kwargs)


class _FastEfficientMultiheadAttention(EfficientMultiheadAttention):

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


class _FastMixFFN(MixFFN):

    def forward(self, x: Tensor, hw_shape, identity=None) -> Tensor:
        out = nchw_to_nlc(self.layers(nlc_to_nchw_cl(x, hw_shape)))
        return (x if identity is None else identity) + self.dropout_layer(out)


class _FastMixVisionTransformer(MixVisionTransformer):

    def forward(self, x: Tensor) -> List[Tensor]:
        outs = []
        for i, layer in enumerate(self.layers):
            x, hw_shape = layer[0](x)
            for block in layer[1]:
                x = block(x, hw_shape)
            x = nlc_to_nchw_cl(layer[2](x), hw_shape)
            if i in self.out_indices:
                outs.append(x)
        return outs


class _FastSegformerHead(SegformerHead):

    def forward(self, inputs: List[Tensor]) -> Tensor:
        fusion = self.fusion_conv
        # Hooks on the fusion (e.g. feature capture, old-style weight or spectral norm, which
        # recompute the weight in a pre-hook) need it called: mmseg's computation. The JIT
        # tracer of a FLOP counter adds scope hooks to every module: those only name scopes.
        if not torch.jit.is_tracing() and any(
                m._forward_hooks or m._forward_pre_hooks for m in (fusion, fusion.conv)):
            return super().forward(inputs)
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


class _FastMultiModalMiT(MultiModalMiT):
    stack = staticmethod(stack_channels_last)


class _FastCrossAttention(_CrossAttention):
    to_map = staticmethod(nlc_to_nchw_cl)


class _FastCrossModalBlock(_CrossModalBlock):
    to_map = staticmethod(nlc_to_nchw_cl)

    def forward_stack(self, x: Tensor) -> Tensor:
        """All primaries as one batch. x: (B, N, C, H, W) -> (N, B, C, H, W)."""
        b, n, c, h, w = x.shape
        per_mod = to_channels_last(  # (N * B, C, H, W), primary-major
            x.permute(1, 0, 3, 4, 2).reshape(n * b, h, w, c).permute(0, 3, 1, 2))
        out = self.self_attend(per_mod)
        if n > 1:
            sel = self.select(per_mod).view(n, b, c, h, w)
            if self.aux_summary == 'shared':
                merged = _max0(sel)
            else:
                merged = _leave_one_out_max(sel).view(n * b, c, h, w)
            del sel
            out = out + self.cross_attn(out, self.mix(merged))
        return out.view(n, b, c, h, w)


class _FastCMTBNeck(CMTBNeck):

    def forward(self, inputs: Sequence[Tensor]) -> tuple:
        self.check_inputs(inputs)
        fused, stacks = [], []
        for i, ((block, ), x) in enumerate(zip(self.stages, inputs)):
            per_primary = self.run_stage(i, block.forward_stack, x)
            fused.append(to_channels_last(_sum0(per_primary)))
            stacks.append(per_primary.transpose(0, 1) if self.training else None)
        return tuple(fused) + tuple(stacks)


#: plain class -> its fast-path class
_FAST = {
    EfficientMultiheadAttention: _FastEfficientMultiheadAttention,
    MixFFN: _FastMixFFN,
    MixVisionTransformer: _FastMixVisionTransformer,
    SegformerHead: _FastSegformerHead,
    MultiModalMiT: _FastMultiModalMiT,
    CMTBNeck: _FastCMTBNeck,
    _CrossModalBlock: _FastCrossModalBlock,
    _CrossAttention: _FastCrossAttention,
}


def _head_reorders_exactly(head: SegformerHead) -> bool:
    fusion = head.fusion_conv
    conv = getattr(fusion, 'conv', None)
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.groups == 1
            and tuple(fusion.order) == ('conv', 'norm', 'act'))


def enable_fast_path(model: nn.Module) -> int:
    """Switch every module of ``model`` whose class is in :data:`_FAST` to its fast class (and
    the ``nn.MultiheadAttention`` inside each ``EfficientMultiheadAttention`` to one that skips
    the attention maps). A ``SegformerHead`` whose fusion is not a plain 1x1 convolution
    followed by norm and activation keeps mmseg's computation.

    Returns:
        int: The number of modules switched.
    """
    count = 0
    for m in model.modules():
        fast = _FAST.get(type(m))
        if fast is not None and not (type(m) is SegformerHead and not _head_reorders_exactly(m)):
            m.__class__ = fast
            count += 1
        if isinstance(m, EfficientMultiheadAttention) and type(m.attn) is nn.MultiheadAttention:
            m.attn.__class__ = _NoWeightsMultiheadAttention
            count += 1
    return count

"""Cross-Modal Transformer Block (CMTB) neck of EQUISeg: fuses each stage's per-modality maps."""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import constant_init, normal_init, trunc_normal_init
from torch import Tensor

from mmseg.models.backbones.mit import EfficientMultiheadAttention, MixFFN
from mmseg.models.utils import nchw_to_nlc
from mmseg.registry import MODELS
from ..utils import (nlc_to_nchw_cl, stack_channels_last, to_channels_last, use_channels_last,
                     use_fast_attention)

_SELECTIONS = ('sqh', 'max', 'mean')
_PER_MODALITY_OUT = ('fused', 'raw', 'none')
_AUX_SUMMARIES = ('per_primary', 'shared')


def _norm_nchw(norm: nn.Module, x: Tensor) -> Tensor:
    """Apply a channel-last norm (e.g. LayerNorm) to an NCHW map."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _box_mean(x: Tensor, k: int) -> Tensor:
    """k x k average pooling, stride 1, same size, over in-image pixels only.

    Computed as a k x 1 then a 1 x k pool: with ``count_include_pad=False`` both the window sum
    and the in-image count factor over the two axes, so this equals
    ``F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)`` (up to rounding) with 2k instead
    of k^2 operations per element.
    """
    p = k // 2
    x = F.avg_pool2d(x, (k, 1), stride=1, padding=(p, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, k), stride=1, padding=(0, p), count_include_pad=False)


def _primary_major(x: Tensor) -> Tensor:
    """(B, N, C, H, W) -> (N * B, C, H, W), primary-major, as a regular channels-last map (a
    view when x is stored channels-innermost and B = 1, as ``MultiModalMiT`` returns it)."""
    b, n, c, h, w = x.shape
    return to_channels_last(
        x.permute(1, 0, 3, 4, 2).reshape(n * b, h, w, c).permute(0, 3, 1, 2))


def _sum0(x: Tensor) -> Tensor:
    """Sum over dim 0 as element-wise adds (``Tensor.sum(0)`` is many times slower on the
    channels-last-strided stacks the attention layers produce)."""
    out = x[0] + x[1] if x.shape[0] > 1 else x[0].clone()
    for i in range(2, x.shape[0]):
        out = out + x[i]
    return out


def _max0(x: Tensor) -> Tensor:
    """Max over dim 0 as element-wise maxima (see :func:`_sum0`)."""
    out = x[0]
    for i in range(1, x.shape[0]):
        out = torch.maximum(out, x[i])
    return out


def _leave_one_out(x: Tensor, reduction: str) -> Tensor:
    """Along dim 0 (size N >= 2), entry m is the max ('max') or mean ('mean') of the others.

    The max comes from running maxima from both ends (3N - 6 element-wise maxima for N >= 3):
    out[m] = max(max(x[:m]), max(x[m + 1:])), the values of ``x[others].max(0)``.
    """
    n = x.shape[0]
    if reduction == 'mean':
        return (_sum0(x).unsqueeze(0) - x) / (n - 1)
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


class _CrossAttention(BaseModule):
    """Multi-head cross-attention, Q from ``query``, K/V from a spatially reduced ``context``.

    f_c = W_o softmax(Q K^T / sqrt(d)) V with Q = W_q LN(query), [K, V] = W_kv LN(SR(context)),
    SR a strided ``sr_ratio`` x ``sr_ratio`` convolution (identity for 1), as MiT's attention,
    on the context zero-padded at the bottom/right to a multiple of ``sr_ratio`` (mmseg's MiT
    instead drops the last rows/columns that do not fill a window; padding lets every pixel
    reach a key and lets maps smaller than the ratio work). Maps whose sides the ratio divides
    (e.g. 1024 x 1024 inputs) are not padded.
    With ``kv_grid`` = g, SR is instead an average pooling of the context to g x g cells
    (adaptive, as PVTv2's linear spatial-reduction attention; a side shorter than g keeps its
    length): the same number of keys at any input size, no SR weights.
    A ``context`` with a batch that divides the query's (one per sample, shared by several
    primaries stacked primary-major) is projected once and reused for each of them.
    """

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int, qkv_bias: bool,
                 attn_drop: float, norm_cfg: dict, kv_grid: Optional[int] = None) -> None:
        super().__init__()
        self.kv_grid = kv_grid
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.norm_q = build_norm_layer(norm_cfg, embed_dims)[1]
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, 2 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.sr = nn.Conv2d(embed_dims, embed_dims, sr_ratio, sr_ratio) \
            if sr_ratio > 1 and kv_grid is None else None
        self.norm_kv = build_norm_layer(norm_cfg, embed_dims)[1]

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        b, c, h, w = query.shape
        q = self.q(self.norm_q(nchw_to_nlc(query)))
        if self.kv_grid is not None:
            g = self.kv_grid
            context = F.adaptive_avg_pool2d(
                context, (min(g, context.shape[2]), min(g, context.shape[3])))
        elif self.sr is not None:
            r = self.sr.kernel_size[0]
            pad_h, pad_w = -context.shape[2] % r, -context.shape[3] % r
            if pad_h or pad_w:  # every pixel reaches a key: zero-pad the bottom/right to a
                # multiple of the ratio ('corner', as mmseg's AdaptivePadding)
                context = F.pad(context, (0, pad_w, 0, pad_h))
            context = self.sr(context)
        kv = self.kv(self.norm_kv(nchw_to_nlc(context)))
        if kv.shape[0] != b:  # one context per sample for b // kv.shape[0] primaries
            kv = kv.repeat(b // kv.shape[0], 1, 1)
        d = c // self.num_heads
        q = q.view(b, h * w, self.num_heads, d).transpose(1, 2)
        k, v = kv.view(b, -1, 2, self.num_heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return nlc_to_nchw_cl(out, (h, w))


class _CrossModalBlock(BaseModule):
    """One CMTB: self-attention on the primary, auxiliary selection and mixing, cross-attention.

    :meth:`forward_single` is the straightforward per-primary computation; :meth:`forward`
    runs the same steps for all primaries of a stage as one batch, with the same results
    (``aux_summary='per_primary'``).
    """

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int, pool_sizes: Sequence[int],
                 selection: str, with_cross: bool, with_ffn: bool, ffn_ratio: int,
                 qkv_bias: bool, attn_drop: float, norm_cfg: dict,
                 aux_summary: str = 'per_primary', cross_sr_ratio: Optional[int] = None,
                 with_self_attn: bool = True, cross_kv_grid: Optional[int] = None) -> None:
        super().__init__()
        self.selection = selection
        self.aux_summary = aux_summary
        self.with_cross = with_cross
        self.with_self_attn = with_self_attn
        self.pool_sizes = tuple(pool_sizes)
        if with_self_attn:
            self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
            self.self_attn = EfficientMultiheadAttention(
                embed_dims=embed_dims, num_heads=num_heads, attn_drop=attn_drop,
                batch_first=True, qkv_bias=qkv_bias, norm_cfg=norm_cfg, sr_ratio=sr_ratio)
        if with_cross:
            self.score = nn.Conv2d(embed_dims, 1, 1) if selection == 'sqh' else None
            self.mix_norm = build_norm_layer(norm_cfg, embed_dims)[1]
            self.mix_proj = nn.Conv2d(embed_dims, embed_dims, 1)
            self.cross_attn = _CrossAttention(
                embed_dims, num_heads, sr_ratio if cross_sr_ratio is None else cross_sr_ratio,
                qkv_bias, attn_drop, norm_cfg, kv_grid=cross_kv_grid)
        if with_ffn:
            self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
            self.ffn = MixFFN(embed_dims, ffn_ratio * embed_dims)
        else:
            self.ffn = None

    def self_attend(self, x: Tensor) -> Tensor:
        """f1' = f1 + MHSA(LN(f1)) on (B, C, H, W); f1' = f1 without the self-attention."""
        if not self.with_self_attn:
            return x
        hw = x.shape[2:]
        tokens = nchw_to_nlc(x)
        return nlc_to_nchw_cl(self.self_attn(self.norm1(tokens), hw, identity=tokens), hw)

    def select(self, x: Tensor) -> Tensor:
        """Self-Query Hub scoring x <- s * x + x, s = sigmoid(conv1x1(x)) per pixel ('sqh')."""
        if self.score is None:
            return x
        return x * (1 + torch.sigmoid(self.score(x)))  # one full-size op fewer than s * x + x

    def merge(self, selected: List[Tensor]) -> Tensor:
        """Element-wise max ('sqh', 'max') or mean ('mean') over the selected auxiliaries."""
        stacked = torch.stack(selected, 0)
        return stacked.mean(0) if self.selection == 'mean' else stacked.max(0).values

    def mix(self, x: Tensor) -> Tensor:
        """Parallel Pooling Mixer: x + W * sum_k AvgPool_k(LN(x)) (stride 1, same size, the
        mean over in-image pixels), each pool computed separably (:func:`_box_mean`)."""
        normed = _norm_nchw(self.mix_norm, x)
        pooled = _box_mean(normed, self.pool_sizes[0])
        for k in self.pool_sizes[1:]:
            pooled = pooled.add_(_box_mean(normed, k))  # in place: no backward needs it
        return self.mix_proj(pooled) + x  # out of place: keeps x's precision under AMP

    def finish(self, x: Tensor) -> Tensor:
        """Optional MixFFN with a residual."""
        if self.ffn is None:
            return x
        hw = x.shape[2:]
        tokens = nchw_to_nlc(x)
        return nlc_to_nchw_cl(self.ffn(self.norm2(tokens), hw, identity=tokens), hw)

    def forward_single(self, primary: Tensor, auxiliaries: List[Tensor]) -> Tensor:
        """The CMTB for one primary (B, C, H, W) and its auxiliaries, step by step (the
        paper's computation, ``aux_summary='per_primary'``)."""
        out = self.self_attend(primary)
        if auxiliaries:
            f_aux = self.mix(self.merge([self.select(a) for a in auxiliaries]))
            out = out + self.cross_attn(out, f_aux)
        return self.finish(out)

    def forward(self, x: Tensor) -> Tensor:
        """All primaries of a stage as one batch. x: (B, N, C, H, W) -> (N, B, C, H, W).

        What does not depend on the primary runs once per modality (self-attention, SQH
        scoring). 'per_primary': the leave-one-out max/mean over the other modalities gives
        each primary its own merged auxiliary, mixed and attended to (equal to
        :meth:`forward_single` for every primary). 'shared': one merge over all N modalities
        per sample, mixed and projected to K/V once, attended to by every primary.
        """
        b, n = x.shape[:2]
        shape = x.shape[2:]
        per_mod = _primary_major(x)
        out = self.self_attend(per_mod)
        if n > 1:
            sel = self.select(per_mod).view(n, b, *shape)
            if self.aux_summary == 'shared':
                merged = _sum0(sel) / n if self.selection == 'mean' else _max0(sel)
            else:
                merged = _leave_one_out(sel, 'mean' if self.selection == 'mean' else 'max')
                merged = merged.view(n * b, *shape)
            del sel
            out = out + self.cross_attn(out, self.mix(merged))
        return self.finish(out).view(n, b, *shape)


@MODELS.register_module()
class CMTBNeck(BaseModule):
    """Cross-Modal Transformer Block neck: one CMTB per stage, every modality primary in turn.

    For a primary feature f1 and the N - 1 auxiliaries of a stage, the CMTB computes
    (1) f1' = f1 + MHSA(LN(f1)) with MiT's spatial-reduction attention; (2) auxiliary selection:
    the Self-Query Hub scores each auxiliary x <- s * x + x, s = sigmoid(conv1x1(x)) per pixel,
    merges them by element-wise max, and a Parallel Pooling Mixer gives
    f_aux = m + W * sum_k AvgPool_k(LN(m)); (3) cross-attention f_c = softmax(Q K^T / sqrt(d)) V,
    Q from LN(f1'), K and V from the spatially reduced LN(f_aux); (4) f = f1' + f_c, optionally
    followed by f <- f + MixFFN(LN(f)). The stage output is the sum of f over the primaries
    ("Add" fusion). With N = 1 the block is the self-attention step only.

    Paper-silent choices (each a config option): the SQH score is one 1x1 convolution shared by
    all modalities of a block; the mixer has a pre-LayerNorm and a 1x1 projection; the query and
    key/value inputs of the cross-attention are layer-normalised; the FFN is off.

    Output contract (what the heads read; a new multimodal neck for these heads returns the
    same): for S stages, a tuple of 2 * S entries in every mode, train and eval alike:

    * ``outs[:S]``: the fused maps (B, C_i, H_i, W_i), regular channels-last strides, for the
      decode head (mmseg's ``SegformerHead(in_index=[0, 1, 2, 3])``);
    * ``outs[S:]``: the per-modality stacks (B, N, C_i, H_i, W_i), modalities in backbone
      order, for :class:`~equiseg_mm.models.heads.SGMHead` (which reads the last S entries by
      default), or ``None`` where the neck does not produce them.

    The stacks are produced in training mode only (``stacks_in_eval=True``: in eval mode too),
    so dropping the SGM takes nothing but removing the ``auxiliary_head``. In training they cost
    no computation (they are the per-primary maps the fusion sums, or the backbone's maps);
    the caller holds them until its loss returns. In eval mode nothing of them is kept: at
    inference they would be held through the decode head, which with EQUISeg-B0 on RGB-D-E-L
    at 1024 x 1024 raised the peak forward memory by about 65 MB, above that of a
    single-modality SegFormer-B0.

    What does not depend on the primary is computed once: the self-attention of every modality
    and its SQH-scored map; with shared weights all primaries run as one batch (leave-one-out
    max/mean over the auxiliaries from running maxima, separable pooling in the mixer).
    Results equal the per-primary loop (:meth:`_CrossModalBlock.forward_single`) up to
    floating-point rounding. ``aux_summary='shared'`` is a cheaper variant that changes results.

    Args:
        in_channels (Sequence[int]): Channels per stage. Defaults to (32, 64, 160, 256) (MiT-B0).
        num_heads (Sequence[int]): Attention heads per stage. Defaults to (1, 2, 5, 8).
        sr_ratios (Sequence[int]): Spatial-reduction ratio of the self- and cross-attention K/V
            per stage. Defaults to (8, 4, 2, 1) (as MiT).
        cross_sr_ratios (Sequence[int], optional): A different reduction ratio for the
            cross-attention K/V per stage (the paper does not say how its cross-attention reduces
            K/V). E.g. (16, 8, 4, 2) gives it 4x fewer keys per stage, so about 4x less attention
            arithmetic; it changes the model (the shipped configs use it together with
            ``aux_summary='shared'``; same full-modality mIoU on the synthetic job, README
            "Performance"). Defaults to None (``sr_ratios``, the paper's block).
        cross_kv_grids (Sequence[int], optional): Instead of a strided reduction, the
            cross-attention's K/V come from the context average-pooled to g x g cells per stage
            (adaptive pooling, as PVTv2's linear spatial-reduction attention): the same number
            of keys at every input size (up to g x g: a side shorter than g keeps its length)
            and no reduction weights. E.g. (8, 8, 8, 8) gives the key count of
            ``cross_sr_ratios=(32, 16, 8, 4)`` at 1024 x 1024, and 8 x 8 / 8 x 8 / 6 x 6 / 3 x 3
            keys on 96 x 96 crops where those ratios leave one per stage. Exclusive with
            ``cross_sr_ratios``. Not in the paper; with no self-attention step it cost about
            one point of mIoU on the synthetic job (README, "Performance"). Defaults to None
            (strided reduction).
        pool_sizes (Sequence[int]): Odd kernel sizes of the mixer's parallel average pools.
            Defaults to (3, 7, 11).
        selection (str): Auxiliary selection: 'sqh' (Self-Query Hub + max merge, the paper's),
            'max' (max merge, no scoring) or 'mean'. Defaults to 'sqh'.
        share_weights (bool): One CMTB per stage shared by all primaries (True) or one per
            primary (False, needs ``num_modalities``). Defaults to True: it treats every
            modality identically ("equal encoding"), its size does not grow with N, it works for
            any N, and it lets all primaries run as one batch.
        num_modalities (int, optional): Number of modalities, checked at run time; required
            when ``share_weights=False``. With 1, no cross-modal layers are built (so none sit
            unused, which DDP dislikes). Defaults to None (any N).
        per_modality_out (str): What the stack entries ``outs[S:]`` hold: 'fused' (the CMTB
            output with each modality as primary), 'raw' (the backbone maps) or 'none' (always
            ``None``; only saves holding the maps while training without an SGM, it is not
            needed to drop the SGM). Defaults to 'fused'.
        stacks_in_eval (bool): Produce the stacks in eval mode too (see "Output contract").
            Defaults to False.
        with_ffn (bool): Add a MixFFN after the cross-attention residual. Defaults to False
            (the paper's block ends at f = f1' + f_c).
        ffn_ratio (int): Hidden ratio of that FFN. Defaults to 4.
        qkv_bias (bool): Bias on the q, k, v projections. Defaults to True.
        attn_drop (float): Attention dropout. Defaults to 0.0.
        norm_cfg (dict): Channel norm. Defaults to ``dict(type='LN', eps=1e-6)`` (as MiT).
        fast_attention (bool): Self-attention without computing the discarded attention maps
            (see :func:`~equiseg_mm.models.utils.use_fast_attention`). Defaults to True.
        fast_layout (bool): The self-attention's spatial reduction (and the optional MixFFN) on
            regular channels-last maps (see :func:`~equiseg_mm.models.utils.use_channels_last`);
            same outputs. The block's own maps are channels-last either way. Defaults to True.
        aux_summary (str): What each primary cross-attends to. 'per_primary' (the paper's):
            the SQH-scored maps of its N - 1 auxiliaries, merged and mixed per primary, so the
            mixer, the K/V reduction and the K/V projection run N times per stage. 'shared': one
            summary per sample, merged over all N modalities (the primary's own map included),
            mixed and projected to K/V once, attended to by every primary; the query side and
            the attention itself are unchanged. Not in the paper (it changes results; the shipped
            configs use it, see ``cross_sr_ratios``). Needs ``share_weights=True``.
            Defaults to 'per_primary' (the paper's block).
        self_attn (bool | Sequence[bool]): Whether the block of a stage starts with its
            self-attention step f1' = f1 + MHSA(LN(f1)) (one bool for all stages or one per
            stage). A stage without it uses f1' = f1 (its queries are the branch's maps, which
            end in MiT self-attention blocks of their own) and builds no self-attention layers.
            Not in the paper (it changes results): at 1024 x 1024 the self-attention of the two
            high-resolution stages is 16% of EQUISeg-B0's FLOPs (README, "Performance"); the
            shipped configs drop it there. Defaults to True (the paper's block).
        init_cfg (dict, optional): Initialisation config; None uses MiT's scheme.
            Defaults to None.
    """

    def __init__(self,
                 in_channels: Sequence[int] = (32, 64, 160, 256),
                 num_heads: Sequence[int] = (1, 2, 5, 8),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1),
                 cross_sr_ratios: Optional[Sequence[int]] = None,
                 cross_kv_grids: Optional[Sequence[int]] = None,
                 pool_sizes: Sequence[int] = (3, 7, 11),
                 selection: str = 'sqh',
                 share_weights: bool = True,
                 num_modalities: Optional[int] = None,
                 per_modality_out: str = 'fused',
                 stacks_in_eval: bool = False,
                 with_ffn: bool = False,
                 ffn_ratio: int = 4,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 fast_attention: bool = True,
                 fast_layout: bool = True,
                 aux_summary: str = 'per_primary',
                 self_attn: Union[bool, Sequence[bool]] = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        in_channels, num_heads, sr_ratios = list(in_channels), list(num_heads), list(sr_ratios)
        if not in_channels or len(num_heads) != len(in_channels) or \
                len(sr_ratios) != len(in_channels):
            raise ValueError(f'in_channels, num_heads and sr_ratios need one entry per stage, got '
                             f'{in_channels}, {num_heads}, {sr_ratios}')
        for c, h, r in zip(in_channels, num_heads, sr_ratios):
            if h < 1 or c % h:
                raise ValueError(f'num_heads {num_heads} must divide in_channels {in_channels}')
            if r < 1:
                raise ValueError(f'sr_ratios must be >= 1, got {sr_ratios}')
        if cross_kv_grids is not None:
            if cross_sr_ratios is not None:
                raise ValueError('give cross_sr_ratios (strided reduction) or cross_kv_grids '
                                 '(pooling to a fixed grid) for the cross-attention, not both')
            if not isinstance(cross_kv_grids, Sequence) or \
                    len(cross_kv_grids) != len(in_channels) or \
                    any(type(g) is not int or g < 1 for g in cross_kv_grids):
                raise ValueError(f'cross_kv_grids must be None or one int >= 1 per stage '
                                 f'({len(in_channels)}, e.g. [8] * {len(in_channels)}), '
                                 f'got {cross_kv_grids!r}')
        grids = cross_kv_grids or [None] * len(in_channels)
        cross_sr_ratios = sr_ratios if cross_sr_ratios is None else list(cross_sr_ratios)
        if len(cross_sr_ratios) != len(in_channels) or any(
                not isinstance(r, int) or r < 1 for r in cross_sr_ratios):
            raise ValueError(f'cross_sr_ratios must be None or one int >= 1 per stage, '
                             f'got {cross_sr_ratios}')
        if isinstance(self_attn, bool):
            self_attn = [self_attn] * len(in_channels)
        elif not isinstance(self_attn, Sequence) or len(self_attn) != len(in_channels) or \
                not all(isinstance(v, bool) for v in self_attn):
            raise ValueError(f'self_attn must be True, False or one bool per stage '
                             f'({len(in_channels)}), got {self_attn!r}')
        self.self_attn = [bool(v) for v in self_attn]
        pool_sizes = list(pool_sizes)
        if not pool_sizes or any(not isinstance(k, int) or k < 1 or k % 2 == 0
                                 for k in pool_sizes):
            raise ValueError(f'pool_sizes must be odd positive ints, got {pool_sizes}')
        if selection not in _SELECTIONS:
            raise ValueError(f'selection must be one of {_SELECTIONS}, got {selection!r}')
        if per_modality_out not in _PER_MODALITY_OUT:
            raise ValueError(f'per_modality_out must be one of {_PER_MODALITY_OUT}, '
                             f'got {per_modality_out!r}')
        if num_modalities is not None and (not isinstance(num_modalities, int)
                                           or num_modalities < 1):
            raise ValueError(f'num_modalities must be None or an int >= 1, got {num_modalities!r}')
        if not share_weights and num_modalities is None:
            raise ValueError('share_weights=False builds one CMTB per primary, so num_modalities '
                             'must be given (an int >= 1)')
        if ffn_ratio < 1:
            raise ValueError(f'ffn_ratio must be >= 1, got {ffn_ratio}')
        for flag, value in (('fast_attention', fast_attention), ('fast_layout', fast_layout)):
            if not isinstance(value, bool):
                raise ValueError(f'{flag} must be True or False, got {value!r}')
        if aux_summary not in _AUX_SUMMARIES:
            raise ValueError(f'aux_summary must be one of {_AUX_SUMMARIES}, got {aux_summary!r}')
        if aux_summary == 'shared' and not share_weights:
            raise ValueError("aux_summary='shared' needs share_weights=True (one block attends "
                             'for every primary)')
        self.in_channels = in_channels
        self.selection = selection
        self.share_weights = share_weights
        self.num_modalities = num_modalities
        self.per_modality_out = per_modality_out
        self.stacks_in_eval = bool(stacks_in_eval)
        self.aux_summary = aux_summary
        with_cross = num_modalities is None or num_modalities > 1
        copies = 1 if share_weights else num_modalities

        self.stages = ModuleList()
        for c, h, r, cr, sa, g in zip(in_channels, num_heads, sr_ratios, cross_sr_ratios,
                                      self.self_attn, grids):
            self.stages.append(ModuleList([
                _CrossModalBlock(c, h, r, pool_sizes, selection, with_cross, with_ffn,
                                 ffn_ratio, qkv_bias, attn_drop, norm_cfg, aux_summary, cr, sa,
                                 cross_kv_grid=g)
                for _ in range(copies)]))
        if fast_attention:
            use_fast_attention(self)
        if fast_layout:
            use_channels_last(self)

    def init_weights(self) -> None:
        """MiT's initialisation (truncated-normal linears, fan-out convs); SQH scores start at
        0.5 (zero kernel). With an ``init_cfg``, mmengine's initialisation instead."""
        if self.init_cfg is not None:
            super().init_weights()
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_init(m, std=.02, bias=0.)
            elif isinstance(m, nn.LayerNorm):
                constant_init(m, val=1.0, bias=0.)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                normal_init(m, mean=0, std=math.sqrt(2.0 / fan_out), bias=0)
        for m in self.modules():
            if isinstance(m, _CrossModalBlock) and getattr(m, 'score', None) is not None:
                constant_init(m.score, val=0., bias=0.)
        self._is_init = True

    def _fuse_per_primary(self, blocks: ModuleList, x: Tensor) -> Tensor:
        """One block per primary. x: (B, N, C, H, W) -> (N, B, C, H, W)."""
        n = x.shape[1]
        return torch.stack([
            blocks[m].forward_single(x[:, m], [x[:, j] for j in range(n) if j != m])
            for m in range(n)], 0)

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """Fuse each stage.

        Args:
            inputs (Sequence[Tensor]): Per stage, the per-modality maps (B, N, C_i, H_i, W_i).

        Returns:
            tuple[Tensor | None]: 2 * S entries: the fused maps (B, C_i, H_i, W_i) of the S
            stages, then their per-modality stacks (B, N, C_i, H_i, W_i) in training mode (or
            with ``stacks_in_eval``), else S times ``None`` (also always with
            ``per_modality_out='none'``); see "Output contract" in the class docs.
        Raises:
            ValueError: If the number of stages or their widths C_i differ from
                ``in_channels`` (naming both), or the maps are not (B, N, C, H, W) stacks.
        """
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'CMTBNeck expects {len(self.in_channels)} stages (in_channels '
                             f'{self.in_channels}), got {len(inputs)} from the backbone')
        n = inputs[0].shape[1] if inputs[0].dim() == 5 else -1
        for i, x in enumerate(inputs):
            if x.dim() != 5 or x.shape[1] != n:
                raise ValueError(f'stage {i}: expected (B, N={n}, C, H, W), '
                                 f'got {tuple(x.shape)}')
        widths = [int(x.shape[2]) for x in inputs]
        if widths != self.in_channels:
            bad = ', '.join(f'stage {i}: {w} vs {c}' for i, (w, c) in
                            enumerate(zip(widths, self.in_channels)) if w != c)
            raise ValueError(
                f'the backbone gives stage widths {widths} but CMTBNeck was built with '
                f'in_channels={self.in_channels} ({bad}); set the neck\'s (and the heads\') '
                f'in_channels to {widths}')
        if self.num_modalities is not None and n != self.num_modalities:
            raise ValueError(f'CMTBNeck was built for num_modalities={self.num_modalities} '
                             f'but got N={n}')
        with_stacks = self.per_modality_out != 'none' and (self.training or self.stacks_in_eval)
        fused, stacks = [], []
        for blocks, x in zip(self.stages, inputs):
            per_primary = blocks[0](x) if self.share_weights \
                else self._fuse_per_primary(blocks, x)
            # Regular channels-last strides (also for B = 1): mmseg's SegformerHead runs its
            # 1 x 1 convolutions on such maps without layout reorders (about 25% faster and
            # 190 MB less at 1024 x 1024 than on MiT's own outputs, whose batch stride is
            # irregular).
            fused.append(to_channels_last(_sum0(per_primary)))
            if with_stacks:
                stacks.append(per_primary.transpose(0, 1)
                              if self.per_modality_out == 'fused' else x)
        return tuple(fused) + (tuple(stacks) if with_stacks else (None, ) * len(fused))

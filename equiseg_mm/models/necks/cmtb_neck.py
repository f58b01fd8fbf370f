"""Cross-Modal Transformer Block (CMTB) neck of EQUISeg: fuses each stage's per-modality maps."""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import constant_init, normal_init, trunc_normal_init
from torch import Tensor

from mmseg.models.backbones.mit import EfficientMultiheadAttention
from mmseg.models.utils import nchw_to_nlc, nlc_to_nchw
from mmseg.registry import MODELS

_AUX_SUMMARIES = ('per_primary', 'shared')


def _box_mean(x: Tensor, k: int) -> Tensor:
    """k x k average pooling, stride 1, same size, the mean over in-image pixels only
    (``F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)``), as a k x 1 then a 1 x k pool:
    with ``count_include_pad=False`` both the window sum and the pixel count factor over the
    two axes."""
    p = k // 2
    x = F.avg_pool2d(x, (k, 1), stride=1, padding=(p, 0), count_include_pad=False)
    return F.avg_pool2d(x, (1, k), stride=1, padding=(0, p), count_include_pad=False)


class _CrossAttention(BaseModule):
    """Multi-head cross-attention, Q from ``query``, K/V from a spatially reduced ``context``.

    f_c = W_o softmax(Q K^T / sqrt(d)) V with Q = W_q LN(query), [K, V] = W_kv LN(SR(context)),
    SR a strided ``sr_ratio`` x ``sr_ratio`` convolution (identity for 1), as MiT's attention,
    on the context zero-padded at the bottom/right to a multiple of ``sr_ratio`` (mmseg's MiT
    drops the rows/columns that do not fill a window instead; padding lets every pixel reach a
    key and lets maps smaller than the ratio work). A ``context`` whose batch divides the
    query's (one context per sample, shared by several primaries stacked primary-major) is
    projected once and repeated.
    """

    #: (B, L, C) tokens -> (B, C, H, W) map; the fast path swaps in a channels-last view.
    to_map = staticmethod(nlc_to_nchw)

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int, qkv_bias: bool,
                 attn_drop: float, norm_cfg: dict) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.norm_q = build_norm_layer(norm_cfg, embed_dims)[1]
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, 2 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.sr = nn.Conv2d(embed_dims, embed_dims, sr_ratio, sr_ratio) if sr_ratio > 1 else None
        self.norm_kv = build_norm_layer(norm_cfg, embed_dims)[1]

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        b, c, h, w = query.shape
        q = self.q(self.norm_q(nchw_to_nlc(query)))
        if self.sr is not None:
            r = self.sr.kernel_size[0]
            pad_h, pad_w = -context.shape[2] % r, -context.shape[3] % r
            if pad_h or pad_w:
                context = F.pad(context, (0, pad_w, 0, pad_h))
            context = self.sr(context)
        kv = self.kv(self.norm_kv(nchw_to_nlc(context)))
        if kv.shape[0] != b:
            kv = kv.repeat(b // kv.shape[0], 1, 1)
        d = c // self.num_heads
        q = q.view(b, h * w, self.num_heads, d).transpose(1, 2)
        k, v = kv.view(b, -1, 2, self.num_heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return self.to_map(out, (h, w))


class _CrossModalBlock(BaseModule):
    """One CMTB: self-attention on the primary, auxiliary selection and mixing, cross-attention.

    :meth:`forward` takes the per-modality maps of one stage and returns, for every modality as
    primary, the block's output f = f1' + f_c.
    """

    to_map = staticmethod(nlc_to_nchw)

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int, cross_sr_ratio: int,
                 pool_sizes: Sequence[int], with_self_attn: bool, with_cross: bool,
                 aux_summary: str, qkv_bias: bool, attn_drop: float, norm_cfg: dict) -> None:
        super().__init__()
        self.aux_summary = aux_summary
        self.with_self_attn = with_self_attn
        self.with_cross = with_cross
        self.pool_sizes = tuple(pool_sizes)
        if with_self_attn:
            self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
            self.self_attn = EfficientMultiheadAttention(
                embed_dims=embed_dims, num_heads=num_heads, attn_drop=attn_drop,
                batch_first=True, qkv_bias=qkv_bias, norm_cfg=norm_cfg, sr_ratio=sr_ratio)
        if with_cross:
            self.score = nn.Conv2d(embed_dims, 1, 1)
            self.mix_norm = build_norm_layer(norm_cfg, embed_dims)[1]
            self.mix_proj = nn.Conv2d(embed_dims, embed_dims, 1)
            self.cross_attn = _CrossAttention(embed_dims, num_heads, cross_sr_ratio, qkv_bias,
                                              attn_drop, norm_cfg)

    def self_attend(self, x: Tensor) -> Tensor:
        """(1) f1' = f1 + MHSA(LN(f1)) on (B, C, H, W); f1' = f1 without the self-attention."""
        if not self.with_self_attn:
            return x
        hw = x.shape[2:]
        tokens = nchw_to_nlc(x)
        return self.to_map(self.self_attn(self.norm1(tokens), hw, identity=tokens), hw)

    def select(self, x: Tensor) -> Tensor:
        """(2a) Self-Query Hub: x <- s * x + x, s = sigmoid(conv1x1(x)) per pixel."""
        return x * (1 + torch.sigmoid(self.score(x)))

    def mix(self, x: Tensor) -> Tensor:
        """(2b) Parallel Pooling Mixer: x + W * sum_k AvgPool_k(LN(x)) (stride 1, same size)."""
        normed = self.mix_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        pooled = _box_mean(normed, self.pool_sizes[0])
        for k in self.pool_sizes[1:]:
            pooled = pooled.add_(_box_mean(normed, k))
        return self.mix_proj(pooled) + x

    def forward(self, maps: List[Tensor]) -> List[Tensor]:
        """The block for every modality as primary.

        Args:
            maps (list[Tensor]): The N per-modality maps (B, C, H, W) of one stage.

        Returns:
            list[Tensor]: f for each primary, in the order of ``maps``.
        """
        queries = [self.self_attend(x) for x in maps]
        if len(maps) == 1:
            return queries
        selected = [self.select(x) for x in maps]
        if self.aux_summary == 'shared':
            shared = self.mix(torch.stack(selected).max(0).values)
        outs = []
        for m, q in enumerate(queries):
            if self.aux_summary == 'shared':
                f_aux = shared
            else:  # element-wise max over the auxiliaries, then the mixer
                f_aux = self.mix(torch.stack(selected[:m] + selected[m + 1:]).max(0).values)
            outs.append(q + self.cross_attn(q, f_aux))  # (3) cross-attention, (4) residual
        return outs


@MODELS.register_module()
class CMTBNeck(BaseModule):
    """Cross-Modal Transformer Block neck: one CMTB per stage, every modality primary in turn.

    For a primary feature f1 and the N - 1 auxiliaries of a stage, the CMTB computes
    (1) f1' = f1 + MHSA(LN(f1)) with MiT's spatial-reduction attention; (2) auxiliary selection:
    the Self-Query Hub scores each auxiliary x <- s * x + x, s = sigmoid(conv1x1(x)) per pixel,
    merges them by element-wise max, and a Parallel Pooling Mixer gives
    f_aux = m + W * sum_k AvgPool_k(LN(m)); (3) cross-attention f_c = softmax(Q K^T / sqrt(d)) V,
    Q from LN(f1'), K and V from the spatially reduced LN(f_aux); (4) f = f1' + f_c. The stage
    output is the sum of f over the primaries ("Add" fusion). With N = 1 the block is the
    self-attention step only. One block per stage serves every primary (equal encoding).

    Paper-silent choices: the SQH score is one 1x1 convolution shared by all modalities of a
    block, starting at s = 0.5; the mixer has a pre-LayerNorm and a 1x1 projection; the query
    and key/value inputs of the cross-attention are layer-normalised.

    The paper's block is the default. The shipped configs use a cheaper variant, three options
    away (``aux_summary='shared'``, coarser ``cross_sr_ratios``, ``self_attn`` off at the
    high-resolution stages); docs/en/architecture.md says what each changes.

    Output contract (what the heads read): for S stages, a tuple of 2 * S entries:
    ``outs[:S]`` the fused maps (B, C_i, H_i, W_i) for the decode head; ``outs[S:]`` in training
    mode the per-primary stacks (B, N, C_i, H_i, W_i), modalities in backbone order, for
    :class:`~equiseg_mm.models.heads.SGMHead`, and ``None`` in eval mode (nothing is held for
    a head that does not run at inference).

    Args:
        in_channels (Sequence[int]): Channels per stage. Defaults to (32, 64, 160, 256) (MiT-B0).
        num_heads (Sequence[int]): Attention heads per stage. Defaults to (1, 2, 5, 8).
        sr_ratios (Sequence[int]): Spatial-reduction ratio of the self-attention per stage.
            Defaults to (8, 4, 2, 1).
        cross_sr_ratios (Sequence[int], optional): Spatial-reduction ratio of the
            cross-attention's keys per stage. Defaults to None (``sr_ratios``, the paper's).
        pool_sizes (Sequence[int]): Odd kernel sizes of the mixer's parallel average pools.
            Defaults to (3, 7, 11).
        num_modalities (int, optional): Number of modalities, checked at run time. With 1, no
            cross-modal layers are built. Defaults to None (any N).
        aux_summary (str): What each primary cross-attends to. 'per_primary' (the paper's): its
            N - 1 SQH-scored auxiliaries, merged and mixed. 'shared': one summary per sample,
            merged over all N modalities and mixed once, attended to by every primary.
            Defaults to 'per_primary'.
        self_attn (bool | Sequence[bool]): Whether the block of a stage starts with its
            self-attention step (one bool for all stages or one per stage); without it
            f1' = f1. Defaults to True (the paper's).
        qkv_bias (bool): Bias on the q, k, v projections. Defaults to True.
        attn_drop (float): Attention dropout. Defaults to 0.0.
        norm_cfg (dict): Channel norm. Defaults to ``dict(type='LN', eps=1e-6)`` (as MiT).
        with_cp (bool | Sequence[bool]): Activation checkpointing of a stage's block (mmseg's
            ``with_cp``: only the stage's input is kept, the block is recomputed in the backward
            pass), for all stages or one bool per stage; with gradients enabled only. Same
            outputs and gradients, less memory, more time. Defaults to False.
        init_cfg (dict, optional): Initialisation config; None uses MiT's scheme.
            Defaults to None.
    """

    def __init__(self,
                 in_channels: Sequence[int] = (32, 64, 160, 256),
                 num_heads: Sequence[int] = (1, 2, 5, 8),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1),
                 cross_sr_ratios: Optional[Sequence[int]] = None,
                 pool_sizes: Sequence[int] = (3, 7, 11),
                 num_modalities: Optional[int] = None,
                 aux_summary: str = 'per_primary',
                 self_attn: Union[bool, Sequence[bool]] = True,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 with_cp: Union[bool, Sequence[bool]] = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = list(in_channels)
        stages = len(self.in_channels)
        if isinstance(self_attn, bool):
            self_attn = [self_attn] * stages
        if isinstance(with_cp, bool):
            with_cp = [with_cp] * stages
        cross_sr_ratios = sr_ratios if cross_sr_ratios is None else cross_sr_ratios
        per_stage = dict(num_heads=num_heads, sr_ratios=sr_ratios,
                         cross_sr_ratios=cross_sr_ratios, self_attn=self_attn, with_cp=with_cp)
        for key, values in per_stage.items():
            if isinstance(values, str) or not isinstance(values, Sequence) or \
                    len(values) != stages or (key in ('self_attn', 'with_cp') and not all(
                        isinstance(v, bool) for v in values)):
                raise ValueError(f'{key} needs one entry per stage ({stages}, as in_channels '
                                 f'{self.in_channels}), got {values!r}')
        if any(h < 1 or c % h for c, h in zip(self.in_channels, num_heads)):
            raise ValueError(f'num_heads {list(num_heads)} must divide in_channels '
                             f'{self.in_channels}')
        if any(not isinstance(r, int) or r < 1 for r in list(sr_ratios) + list(cross_sr_ratios)):
            raise ValueError(f'sr_ratios and cross_sr_ratios must be ints >= 1, got '
                             f'{list(sr_ratios)}, {list(cross_sr_ratios)}')
        if not pool_sizes or any(not isinstance(k, int) or k < 1 or k % 2 == 0
                                 for k in pool_sizes):
            raise ValueError(f'pool_sizes must be odd positive ints, got {list(pool_sizes)}')
        if aux_summary not in _AUX_SUMMARIES:
            raise ValueError(f'aux_summary must be one of {_AUX_SUMMARIES}, got {aux_summary!r}')
        if num_modalities is not None and (not isinstance(num_modalities, int)
                                           or num_modalities < 1):
            raise ValueError(f'num_modalities must be None or an int >= 1, got {num_modalities!r}')
        self.num_modalities = num_modalities
        self.with_cp = list(with_cp)
        # stages[i][0] is stage i's block (the inner list keeps the state-dict keys
        # ``stages.{i}.0.*`` stable for existing checkpoints)
        self.stages = ModuleList([
            ModuleList([_CrossModalBlock(c, h, r, cr, pool_sizes, bool(sa),
                                         num_modalities is None or num_modalities > 1,
                                         aux_summary, qkv_bias, attn_drop, norm_cfg)])
            for c, h, r, cr, sa in zip(self.in_channels, num_heads, sr_ratios, cross_sr_ratios,
                                       self_attn)])

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
            if isinstance(m, _CrossModalBlock) and m.with_cross:
                constant_init(m.score, val=0., bias=0.)
        self._is_init = True

    def check_inputs(self, inputs: Sequence[Tensor]) -> None:
        """Raise ``ValueError`` naming the problem when ``inputs`` are not S stacks
        (B, N, C_i, H_i, W_i) with this neck's stage widths and modality count."""
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

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Optional[Tensor], ...]:
        """Fuse each stage.

        Args:
            inputs (Sequence[Tensor]): Per stage, the per-modality maps (B, N, C_i, H_i, W_i).

        Returns:
            tuple[Tensor | None]: The S fused maps, then the S per-primary stacks in training
            mode (``None`` in eval mode); see "Output contract".
        """
        self.check_inputs(inputs)
        fused, stacks = [], []
        for i, ((block, ), x) in enumerate(zip(self.stages, inputs)):
            per_primary = self.run_stage(i, _per_primary_stack, block, x)
            fused.append(per_primary.sum(1))
            stacks.append(per_primary if self.training else None)
        return tuple(fused) + tuple(stacks)

    def run_stage(self, index: int, fn, *args) -> Tensor:
        """``fn(*args)``, the computation of stage ``index``, under activation checkpointing
        when ``with_cp`` asks for it and gradients are enabled."""
        if self.with_cp[index] and torch.is_grad_enabled():
            return cp.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)


def _per_primary_stack(block: _CrossModalBlock, x: Tensor) -> Tensor:
    """The block for every primary of a stage stack (B, N, C, H, W), stacked the same way."""
    return torch.stack(block([x[:, m] for m in range(x.shape[1])]), 1)

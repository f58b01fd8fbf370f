"""Cross-Modal Transformer Block (CMTB) neck of EQUISeg: fuses each stage's per-modality maps."""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import constant_init, normal_init, trunc_normal_init
from torch import Tensor

from mmseg.models.backbones.mit import EfficientMultiheadAttention, MixFFN
from mmseg.models.utils import nchw_to_nlc, nlc_to_nchw
from mmseg.registry import MODELS
from ..backbones.multi_modal_mit import use_fast_attention

_SELECTIONS = ('sqh', 'max', 'mean')
_PER_MODALITY_OUT = ('fused', 'raw', 'none')


def _norm_nchw(norm: nn.Module, x: Tensor) -> Tensor:
    """Apply a channel-last norm (e.g. LayerNorm) to an NCHW map."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _CrossAttention(BaseModule):
    """Multi-head cross-attention, Q from ``query``, K/V from a spatially reduced ``context``.

    f_c = W_o softmax(Q K^T / sqrt(d)) V with Q = W_q LN(query), [K, V] = W_kv LN(SR(context)),
    SR a strided ``sr_ratio`` x ``sr_ratio`` convolution (identity for 1), as MiT's attention.
    """

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
            context = self.sr(context)
        kv = self.kv(self.norm_kv(nchw_to_nlc(context)))
        d = c // self.num_heads
        q = q.view(b, h * w, self.num_heads, d).transpose(1, 2)
        k, v = kv.view(b, -1, 2, self.num_heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return nlc_to_nchw(out, (h, w))


class _CrossModalBlock(BaseModule):
    """One CMTB: self-attention on the primary, auxiliary selection and mixing, cross-attention.

    :meth:`forward_single` is the straightforward per-primary computation; the neck calls the
    step methods on batched tensors instead, with the same results.
    """

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int, pool_sizes: Sequence[int],
                 selection: str, with_cross: bool, with_ffn: bool, ffn_ratio: int,
                 qkv_bias: bool, attn_drop: float, norm_cfg: dict) -> None:
        super().__init__()
        self.selection = selection
        self.with_cross = with_cross
        self.pool_sizes = tuple(pool_sizes)
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.self_attn = EfficientMultiheadAttention(
            embed_dims=embed_dims, num_heads=num_heads, attn_drop=attn_drop,
            batch_first=True, qkv_bias=qkv_bias, norm_cfg=norm_cfg, sr_ratio=sr_ratio)
        if with_cross:
            self.score = nn.Conv2d(embed_dims, 1, 1) if selection == 'sqh' else None
            self.mix_norm = build_norm_layer(norm_cfg, embed_dims)[1]
            self.mix_proj = nn.Conv2d(embed_dims, embed_dims, 1)
            self.cross_attn = _CrossAttention(embed_dims, num_heads, sr_ratio, qkv_bias,
                                              attn_drop, norm_cfg)
        if with_ffn:
            self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
            self.ffn = MixFFN(embed_dims, ffn_ratio * embed_dims)
        else:
            self.ffn = None

    def self_attend(self, x: Tensor) -> Tensor:
        """f1' = f1 + MHSA(LN(f1)) on (B, C, H, W)."""
        hw = x.shape[2:]
        tokens = nchw_to_nlc(x)
        return nlc_to_nchw(self.self_attn(self.norm1(tokens), hw, identity=tokens), hw)

    def select(self, x: Tensor) -> Tensor:
        """Self-Query Hub scoring x <- s * x + x, s = sigmoid(conv1x1(x)) per pixel ('sqh')."""
        if self.score is None:
            return x
        return torch.sigmoid(self.score(x)) * x + x

    def merge(self, selected: List[Tensor]) -> Tensor:
        """Element-wise max ('sqh', 'max') or mean ('mean') over the selected auxiliaries."""
        stacked = torch.stack(selected, 0)
        return stacked.mean(0) if self.selection == 'mean' else stacked.max(0).values

    def mix(self, x: Tensor) -> Tensor:
        """Parallel Pooling Mixer: x + W * sum_k AvgPool_k(LN(x)) (stride 1, same size)."""
        normed = _norm_nchw(self.mix_norm, x)
        pooled = sum(F.avg_pool2d(normed, k, stride=1, padding=k // 2, count_include_pad=False)
                     for k in self.pool_sizes)
        return x + self.mix_proj(pooled)

    def finish(self, x: Tensor) -> Tensor:
        """Optional MixFFN with a residual."""
        if self.ffn is None:
            return x
        hw = x.shape[2:]
        tokens = nchw_to_nlc(x)
        return nlc_to_nchw(self.ffn(self.norm2(tokens), hw, identity=tokens), hw)

    def forward_single(self, primary: Tensor, auxiliaries: List[Tensor]) -> Tensor:
        """The CMTB for one primary (B, C, H, W) and its auxiliaries, step by step."""
        out = self.self_attend(primary)
        if auxiliaries:
            f_aux = self.mix(self.merge([self.select(a) for a in auxiliaries]))
            out = out + self.cross_attn(out, f_aux)
        return self.finish(out)


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

    What does not depend on the primary is computed once: the self-attention of every modality
    and its SQH-scored map; with shared weights all primaries run as one batch (leave-one-out
    max/mean over the auxiliaries). Results equal the per-primary loop
    (:meth:`_CrossModalBlock.forward_single`).

    Args:
        in_channels (Sequence[int]): Channels per stage. Defaults to (32, 64, 160, 256) (MiT-B0).
        num_heads (Sequence[int]): Attention heads per stage. Defaults to (1, 2, 5, 8).
        sr_ratios (Sequence[int]): Spatial-reduction ratio of the self- and cross-attention K/V
            per stage. Defaults to (8, 4, 2, 1) (as MiT).
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
        per_modality_out (str): What follows the fused maps in the output: 'fused' (the CMTB
            output with each modality as primary), 'raw' (the backbone maps) or 'none'.
            Defaults to 'fused'.
        with_ffn (bool): Add a MixFFN after the cross-attention residual. Defaults to False
            (the paper's block ends at f = f1' + f_c).
        ffn_ratio (int): Hidden ratio of that FFN. Defaults to 4.
        qkv_bias (bool): Bias on the q, k, v projections. Defaults to True.
        attn_drop (float): Attention dropout. Defaults to 0.0.
        norm_cfg (dict): Channel norm. Defaults to ``dict(type='LN', eps=1e-6)`` (as MiT).
        fast_attention (bool): Self-attention without computing the discarded attention maps
            (see ``use_fast_attention``). Defaults to True.
        init_cfg (dict, optional): Initialisation config; None uses MiT's scheme.
            Defaults to None.
    """

    def __init__(self,
                 in_channels: Sequence[int] = (32, 64, 160, 256),
                 num_heads: Sequence[int] = (1, 2, 5, 8),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1),
                 pool_sizes: Sequence[int] = (3, 7, 11),
                 selection: str = 'sqh',
                 share_weights: bool = True,
                 num_modalities: Optional[int] = None,
                 per_modality_out: str = 'fused',
                 with_ffn: bool = False,
                 ffn_ratio: int = 4,
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 fast_attention: bool = True,
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
        self.in_channels = in_channels
        self.selection = selection
        self.share_weights = share_weights
        self.num_modalities = num_modalities
        self.per_modality_out = per_modality_out
        with_cross = num_modalities is None or num_modalities > 1
        copies = 1 if share_weights else num_modalities

        self.stages = ModuleList()
        for c, h, r in zip(in_channels, num_heads, sr_ratios):
            self.stages.append(ModuleList([
                _CrossModalBlock(c, h, r, pool_sizes, selection, with_cross, with_ffn,
                                 ffn_ratio, qkv_bias, attn_drop, norm_cfg)
                for _ in range(copies)]))
        if fast_attention:
            use_fast_attention(self)

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

    def _fuse_shared(self, block: _CrossModalBlock, x: Tensor) -> Tensor:
        """All primaries at once with one shared block. x: (B, N, C, H, W) -> (N, B, C, H, W)."""
        b, n = x.shape[:2]
        per_mod = x.transpose(0, 1).reshape(n * b, *x.shape[2:])
        out = block.self_attend(per_mod)
        if n > 1:
            sel = block.select(per_mod).reshape(n, b, *x.shape[2:])
            if self.selection == 'mean':
                merged = (sel.sum(0, keepdim=True) - sel) / (n - 1)
            else:  # max over the other modalities = top-1, or top-2 where the primary is top-1
                top, idx = sel.topk(2, dim=0)
                own = torch.arange(n, device=x.device).view(n, 1, 1, 1, 1)
                merged = torch.where(idx[:1] == own, top[1:], top[:1])
            f_aux = block.mix(merged.reshape(n * b, *x.shape[2:]))
            out = out + block.cross_attn(out, f_aux)
        return block.finish(out).reshape(n, b, *x.shape[2:])

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
            tuple[Tensor]: The fused maps (B, C_i, H_i, W_i) of every stage, then, unless
            ``per_modality_out='none'``, the per-modality stacks (B, N, C_i, H_i, W_i).
        """
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'CMTBNeck expects {len(self.in_channels)} stages, got {len(inputs)}')
        n = inputs[0].shape[1] if inputs[0].dim() == 5 else -1
        for i, (x, c) in enumerate(zip(inputs, self.in_channels)):
            if x.dim() != 5 or x.shape[1] != n or x.shape[2] != c:
                raise ValueError(f'stage {i}: expected (B, N={n}, C={c}, H, W), '
                                 f'got {tuple(x.shape)}')
        if self.num_modalities is not None and n != self.num_modalities:
            raise ValueError(f'CMTBNeck was built for num_modalities={self.num_modalities} '
                             f'but got N={n}')
        fused, stacks = [], []
        for blocks, x in zip(self.stages, inputs):
            per_primary = self._fuse_shared(blocks[0], x) if self.share_weights \
                else self._fuse_per_primary(blocks, x)
            fused.append(per_primary.sum(0))
            stacks.append(per_primary.transpose(0, 1) if self.per_modality_out == 'fused' else x)
        if self.per_modality_out == 'none':
            return tuple(fused)
        return tuple(fused) + tuple(stacks)

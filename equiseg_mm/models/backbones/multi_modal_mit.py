"""Multi-branch Mix Transformer: one equal encoder branch per modality (EQUISeg's encoder).

Besides :class:`MultiModalMiT`, this file holds :func:`convert_segformer_mit_keys` (official
SegFormer ``mit_b*.pth`` key names -> mmseg's), which ``tools/convert_mit_checkpoint.py`` uses.
"""
import contextlib
import copy
import logging
import re
import warnings
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule, ModuleList
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor

from mmseg.models.backbones.mit import MixVisionTransformer
from mmseg.registry import MODELS
from ...utils import channel_slices
from ..utils import stack_channels_last, use_channels_last, use_fast_attention

_SEGFORMER_PATCH_EMBED = re.compile(r'^patch_embed(\d+)\.(proj|norm)\.(.+)$')
_SEGFORMER_BLOCK = re.compile(r'^block(\d+)\.(\d+)\.(.+)$')
_SEGFORMER_STAGE_NORM = re.compile(r'^norm(\d+)\.(.+)$')
_SEGFORMER_FFN = {'mlp.fc1.': 'ffn.layers.0.', 'mlp.dwconv.dwconv.': 'ffn.layers.1.',
                  'mlp.fc2.': 'ffn.layers.4.'}


def convert_segformer_mit_keys(state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Convert an official SegFormer ``mit_b*.pth`` state dict to mmseg's MiT key names.

    ``patch_embed{i}.proj/norm`` -> ``layers.{i-1}.0.projection/norm``; ``block{i}.{j}.*`` ->
    ``layers.{i-1}.1.{j}.*`` with ``attn.q`` + ``attn.kv`` concatenated into
    ``attn.attn.in_proj_*``, ``attn.proj`` -> ``attn.attn.out_proj``, ``mlp.fc1/dwconv.dwconv/fc2``
    -> ``ffn.layers.0/1/4`` (linear weights reshaped to 1x1 convolutions); ``norm{i}`` ->
    ``layers.{i-1}.2``. The ImageNet classifier (``head.*``) is dropped; any other key is kept
    unchanged (so that loading reports it as unexpected).

    Args:
        state_dict (Mapping[str, Tensor]): The official state dict (without a ``state_dict``
            wrapper).

    Returns:
        OrderedDict[str, Tensor]: The state dict with mmseg's ``MixVisionTransformer`` names.

    Raises:
        KeyError: If an ``attn.q`` tensor has no matching ``attn.kv`` tensor.
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('head.'):
            continue
        match = _SEGFORMER_PATCH_EMBED.match(key)
        if match:
            stage, part, rest = match.groups()
            part = 'projection' if part == 'proj' else 'norm'
            out[f'layers.{int(stage) - 1}.0.{part}.{rest}'] = value
            continue
        match = _SEGFORMER_STAGE_NORM.match(key)
        if match:
            stage, rest = match.groups()
            out[f'layers.{int(stage) - 1}.2.{rest}'] = value
            continue
        match = _SEGFORMER_BLOCK.match(key)
        if not match:
            out[key] = value
            continue
        stage, block, rest = match.groups()
        prefix = f'layers.{int(stage) - 1}.1.{block}.'
        if rest.startswith('attn.kv.'):
            continue  # merged with attn.q below
        if rest.startswith('attn.q.'):
            kind = rest[len('attn.q.'):]  # 'weight' or 'bias'
            kv_key = key.replace('.attn.q.', '.attn.kv.')
            if kv_key not in state_dict:
                raise KeyError(f'{key} has no matching {kv_key} in the SegFormer state dict')
            out[f'{prefix}attn.attn.in_proj_{kind}'] = torch.cat([value, state_dict[kv_key]], 0)
        elif rest.startswith('attn.proj.'):
            out[prefix + 'attn.attn.out_proj.' + rest[len('attn.proj.'):]] = value
        elif rest.startswith('mlp.'):
            for old, new in _SEGFORMER_FFN.items():
                if rest.startswith(old):
                    tail = rest[len(old):]
                    if old != 'mlp.dwconv.dwconv.' and tail == 'weight' and value.dim() == 2:
                        value = value.reshape(*value.shape, 1, 1)
                    out[prefix + new + tail] = value
                    break
            else:
                out[prefix + rest] = value
        else:  # norm1, norm2, attn.sr, attn.norm keep their names
            out[prefix + rest] = value
    return out


def _extract_backbone_state_dict(checkpoint: Mapping) -> 'OrderedDict[str, Tensor]':
    """Unwrap ``state_dict``/``model``, keep ``backbone.`` keys (prefix stripped) if any, and
    convert official SegFormer names."""
    state_dict = checkpoint
    for wrapper in ('state_dict', 'model'):
        if isinstance(state_dict, Mapping) and isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
    state_dict = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                             for k, v in state_dict.items())
    if any(k.startswith('backbone.') for k in state_dict):
        state_dict = OrderedDict((k[len('backbone.'):], v) for k, v in state_dict.items()
                                 if k.startswith('backbone.'))
    if any(_SEGFORMER_PATCH_EMBED.match(k) or _SEGFORMER_BLOCK.match(k) for k in state_dict):
        state_dict = convert_segformer_mit_keys(state_dict)
    return state_dict


def _adapt_input_channels(weight: Tensor, channels: int) -> Tensor:
    """Adapt a first-layer kernel (O, C_src, k, k) to ``channels`` inputs: the mean over the
    source channels, repeated, times C_src / channels (keeps the response to an input whose
    channels are all equal)."""
    src = weight.shape[1]
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, channels, *([1] * (weight.dim() - 2))) * (src / channels)


def _load_into_branch(branch: nn.Module, state_dict: Mapping[str, Tensor],
                      in_channels: int) -> Dict[str, List[str]]:
    """Copy matching tensors of ``state_dict`` into ``branch``; adapt first-layer kernels.

    Returns:
        dict[str, list[str]]: ``missing``, ``unexpected``, ``mismatched`` (shape) and
        ``adapted`` (input-channel adapted) key names.
    """
    own = branch.state_dict()
    report = dict(missing=[], unexpected=[], mismatched=[], adapted=[])
    to_load, mismatched = OrderedDict(), set()
    for key, value in state_dict.items():
        if key not in own:
            report['unexpected'].append(key)
            continue
        target = own[key]
        if value.shape != target.shape:
            if (value.dim() == 4 and target.dim() == 4 and target.shape[1] == in_channels
                    and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
                value = _adapt_input_channels(value.float(), in_channels)
                report['adapted'].append(key)
            else:
                mismatched.add(key)
                report['mismatched'].append(
                    f'{key} (checkpoint {tuple(value.shape)}, model {tuple(target.shape)})')
                continue
        to_load[key] = value.to(dtype=target.dtype)
    report['missing'] = [k for k in own if k not in to_load and k not in mismatched]
    branch.load_state_dict(to_load, strict=False)
    return report


def _stop_absent_gradients(x: Tensor, outs: Sequence[Tensor]) -> List[Tensor]:
    """The branch outputs ``outs``, detached at the samples whose input ``x`` is all zero.

    A sample whose whole input to a branch is zero is an absent modality (dropped by modality
    dropout or zeroed as missing by the data preprocessor). Its outputs keep their values (what
    the branch computes for zeros, as at test time) but back-propagate nothing into the branch:
    the rest of the model learns to use them, the branch learns from real inputs only. The
    exact gradient at such a sample is unusable: with MiT's initialisation (every bias zero)
    a zero input keeps every token of the branch exactly zero, so every LayerNorm of the branch
    normalises a constant vector, where its input gradient is its output gradient times
    ``weight / sqrt(eps)`` (1000 for eps=1e-6); through the ~30 LayerNorms of a MiT-B0 branch
    that overflows float32 to inf, and LayerNorm's backward turns inf - inf into NaN.
    The outputs stay in the autograd graph (zero gradients) even when every sample is absent, so
    distributed training sees every parameter used.
    """
    present = torch.count_nonzero(x.detach(), dim=tuple(range(1, x.dim()))) > 0
    # no `if present.all()` shortcut: it would synchronise with the GPU at every branch
    return [torch.where(present.view(-1, *([1] * (o.dim() - 1))), o, o.detach())
            for o in outs]


@MODELS.register_module()
class MultiModalMiT(BaseModule):
    """Equal-encoding multimodal backbone: one Mix Transformer branch per modality.

    Every modality gets its own branch with the same settings (no branch is privileged), each an
    mmseg :class:`MixVisionTransformer` (or, with ``branch``, any registered backbone). The
    input is the modalities stacked along channels in ``modalities`` order; the backbone splits
    it by ``in_channels`` and stacks the branch outputs per stage.

    Pretrained weights: ``init_cfg=dict(type='Pretrained', checkpoint=path)`` takes a
    *single-branch* MiT checkpoint (mmseg key names such as ``layers.0.0.projection.weight``,
    optionally under ``state_dict``/``model`` and/or with a ``backbone.`` prefix, or the
    official SegFormer names, converted with :func:`convert_segformer_mit_keys`) and loads it
    into every branch. For a branch whose channel count differs from the checkpoint's (e.g. a
    1-channel depth map), the first patch-embedding kernel becomes the mean over the RGB input
    channels repeated C times and scaled by 3 / C, so an input with C equal channels gives the
    response the RGB kernel gives to 3 equal channels (paper silent; a common choice). Missing,
    unexpected and shape-mismatched keys are warned about by name.

    Absent modalities: with gradients enabled, the outputs of a branch are detached at the
    samples whose whole input to that branch is zero (a modality dropped by the data
    preprocessor's modality dropout, or missing): their values are unchanged (what the branch
    computes for zeros, as at test time), but they train only the rest of the model, never the
    branch itself (see :func:`_stop_absent_gradients` for why the exact gradient is unusable).

    Args:
        modalities (Sequence[str]): Modality names; their order is the stacking order of the
            input channels and of the output axis N.
        in_channels (int | Sequence[int]): Channels per modality (one int for all, or one per
            modality). Defaults to 3.
        embed_dims (int): MiT base embedding dimension. Defaults to 64 (as mmseg's MiT).
        num_stages (int): Number of stages. Defaults to 4.
        num_layers (Sequence[int]): Encoder layers per stage. Defaults to (3, 4, 6, 3).
        num_heads (Sequence[int]): Attention heads per stage. Defaults to (1, 2, 4, 8).
        patch_sizes (Sequence[int]): Overlapping patch-embedding kernel per stage.
            Defaults to (7, 3, 3, 3).
        strides (Sequence[int]): Patch-embedding stride per stage. Defaults to (4, 2, 2, 2).
        sr_ratios (Sequence[int]): Spatial-reduction ratio per stage. Defaults to (8, 4, 2, 1).
        out_indices (Sequence[int]): Stages to output. Defaults to (0, 1, 2, 3).
        mlp_ratio (int): MixFFN hidden ratio. Defaults to 4.
        qkv_bias (bool): Bias on q, k, v. Defaults to True.
        drop_rate (float): Dropout rate. Defaults to 0.0.
        attn_drop_rate (float): Attention dropout rate. Defaults to 0.0.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.0.
        act_cfg (dict): FFN activation. Defaults to ``dict(type='GELU')``.
        norm_cfg (dict): Normalisation layer. Defaults to ``dict(type='LN', eps=1e-6)``.
        with_cp (bool): Gradient checkpointing in each layer. Defaults to False.
        branch (dict, optional): Config of any registered backbone used for every branch instead
            of MiT (the MiT arguments are then ignored); its ``in_channels`` is set per
            modality. All branches must return maps of equal shapes. Defaults to None (MiT).
        fast_attention (bool): Run the branches' attention with ``need_weights=False`` (see
            :func:`~equiseg_mm.models.utils.use_fast_attention`); same outputs, much faster on
            CPU. Defaults to True.
        fast_layout (bool): Run the MiT branches on regular channels-last maps (see
            :func:`~equiseg_mm.models.utils.use_channels_last`) and stack their outputs in
            channels-last memory; same outputs, about 1.5x faster branches at batch 1 on CPU.
            Defaults to True.
        init_cfg (dict, optional): Initialisation config; ``type='Pretrained'`` is handled as
            described above. Defaults to None.
    """

    def __init__(self,
                 modalities: Sequence[str],
                 in_channels: Union[int, Sequence[int]] = 3,
                 embed_dims: int = 64,
                 num_stages: int = 4,
                 num_layers: Sequence[int] = (3, 4, 6, 3),
                 num_heads: Sequence[int] = (1, 2, 4, 8),
                 patch_sizes: Sequence[int] = (7, 3, 3, 3),
                 strides: Sequence[int] = (4, 2, 2, 2),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1),
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 mlp_ratio: int = 4,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 act_cfg: dict = dict(type='GELU'),
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 with_cp: bool = False,
                 branch: Optional[dict] = None,
                 fast_attention: bool = True,
                 fast_layout: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(modalities, str) or not isinstance(modalities, Sequence) \
                or len(modalities) == 0 or not all(isinstance(m, str) for m in modalities):
            raise ValueError(f'modalities must be a non-empty list of names, got {modalities!r}')
        self.modalities = list(modalities)
        if isinstance(in_channels, int):
            in_channels = [in_channels] * len(self.modalities)
        if not isinstance(in_channels, Sequence) or \
                not all(isinstance(c, int) and not isinstance(c, bool) for c in in_channels):
            raise ValueError(f'in_channels must be an int or one int per modality, '
                             f'got {in_channels!r}')
        self._slices = channel_slices(self.modalities, in_channels)  # validates counts and names
        self._branch_cache: Optional[dict] = None
        self.in_channels = [int(c) for c in in_channels]
        if branch is not None and not isinstance(branch, Mapping):
            raise ValueError(f'branch must be None (MiT) or a backbone config dict, got {branch!r}')
        if branch is not None and 'type' not in branch:
            raise ValueError("branch must name a registered backbone with 'type', "
                             f'got {dict(branch)!r}')
        for flag, value in (('fast_attention', fast_attention), ('fast_layout', fast_layout)):
            if not isinstance(value, bool):
                raise ValueError(f'{flag} must be True or False, got {value!r}')
        if isinstance(init_cfg, (list, tuple)) and any(
                isinstance(c, dict) and c.get('type') == 'Pretrained' for c in init_cfg):
            raise ValueError("init_cfg: give type='Pretrained' as a single dict, not in a list, "
                             f'got {init_cfg!r}')
        if branch is None:
            lengths = {k: len(v) for k, v in dict(
                num_layers=num_layers, num_heads=num_heads, patch_sizes=patch_sizes,
                strides=strides, sr_ratios=sr_ratios).items()}
            if any(n != num_stages for n in lengths.values()):
                raise ValueError(f'num_layers, num_heads, patch_sizes, strides and sr_ratios '
                                 f'need num_stages={num_stages} entries each, got {lengths}')
            if len(out_indices) == 0 or any(not 0 <= i < num_stages for i in out_indices):
                raise ValueError(f'out_indices must be non-empty stage indices in '
                                 f'[0, {num_stages}), got {list(out_indices)}')
        self.branch_cfg = copy.deepcopy(dict(branch)) if branch is not None else None
        self.fast_attention = fast_attention
        self.fast_layout = fast_layout

        self.branches = ModuleList()
        for channels in self.in_channels:
            if branch is None:
                self.branches.append(MixVisionTransformer(
                    in_channels=channels, embed_dims=embed_dims, num_stages=num_stages,
                    num_layers=list(num_layers), num_heads=list(num_heads),
                    patch_sizes=list(patch_sizes), strides=list(strides),
                    sr_ratios=list(sr_ratios), out_indices=tuple(out_indices),
                    mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate,
                    attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
                    act_cfg=act_cfg, norm_cfg=norm_cfg, with_cp=with_cp))
            else:
                cfg = copy.deepcopy(self.branch_cfg)
                cfg['in_channels'] = channels
                self.branches.append(MODELS.build(cfg))
        if fast_attention:
            use_fast_attention(self.branches)
        if fast_layout:
            use_channels_last(self.branches)

    @property
    def num_modalities(self) -> int:
        """int: Number of modalities (branches)."""
        return len(self.modalities)

    def init_weights(self) -> None:
        """Initialise the branches; with a ``Pretrained`` init_cfg load it into every branch."""
        cfg = self.init_cfg
        if not (isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'):
            super().init_weights()
            return
        if self._is_init:
            return
        for branch in self.branches:  # defaults for any key the checkpoint lacks
            if hasattr(branch, 'init_weights'):
                branch.init_weights()
        checkpoint = CheckpointLoader.load_checkpoint(
            cfg['checkpoint'], map_location='cpu', logger='current')
        state_dict = _extract_backbone_state_dict(checkpoint)
        problems = []
        for name, channels, branch in zip(self.modalities, self.in_channels, self.branches):
            report = _load_into_branch(branch, state_dict, channels)
            for kind in ('missing', 'unexpected', 'mismatched'):
                if report[kind]:
                    problems.append(f'branch {name!r}: {kind} keys {report[kind]}')
            adapted = f', adapted to {channels} channels: {report["adapted"]}' \
                if report['adapted'] else ''
            print_log(f'MultiModalMiT: loaded {cfg["checkpoint"]} into branch {name!r}{adapted}',
                      logger='current', level=logging.INFO)
        if problems:
            msg = f'MultiModalMiT: checkpoint {cfg["checkpoint"]} does not match: ' + \
                '; '.join(problems)
            warnings.warn(msg)
            print_log(msg, logger='current', level=logging.WARNING)
        self._is_init = True

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Encode each modality with its own branch.

        Args:
            x (Tensor): Stacked modalities, shape (B, sum(in_channels), H, W).

        Returns:
            tuple[Tensor]: One tensor per output stage, shape (B, N, C_i, H_i, W_i), the
            modalities in ``modalities`` order; with ``fast_layout`` their memory is ordered
            (B, N, H_i, W_i, C_i) (a permuted view).
        """
        if x.dim() != 4 or x.shape[1] != sum(self.in_channels):
            raise ValueError(
                f'MultiModalMiT expects (B, {sum(self.in_channels)}, H, W) for modalities '
                f'{self.modalities} with channels {self.in_channels}, got {tuple(x.shape)}')
        per_branch = [self._run_branch(n, branch, x[:, self._slices[name]])
                      for n, (name, branch) in enumerate(zip(self.modalities, self.branches))]
        stack = stack_channels_last if self.fast_layout else torch.stack
        return tuple(stack([outs[i] for outs in per_branch], dim=1)
                     for i in range(len(per_branch[0])))

    @contextlib.contextmanager
    def reuse_branch_outputs(self, max_zero_shapes: int = 4):
        """Within this context, an inference pass reuses a branch's output when the branch sees
        the same input as in an earlier pass: an all-zero input (a missing modality) or the same
        tensor values as its previous input.

        The missing-modality evaluation runs every modality subset on the same batch; the
        branches are independent, so each branch only needs two runs per batch (its real input
        and zeros) instead of one per subset. Results are bit-identical: the same computation
        on the same values. Only active in eval mode without gradients.

        Args:
            max_zero_shapes (int): How many input shapes of zero-input outputs to keep.
                Defaults to 4.
        """
        self._branch_cache = dict(zero={}, last={}, max_zero_shapes=max_zero_shapes, hits=0)
        try:
            yield self._branch_cache
        finally:
            self._branch_cache = None

    def _run_branch(self, index: int, branch: nn.Module, x: Tensor):
        cache = self._branch_cache
        if cache is None or self.training or torch.is_grad_enabled():
            outs = branch(x)
            if torch.is_grad_enabled():
                outs = _stop_absent_gradients(x, outs)
            return outs
        if not x.any():
            key = (index, tuple(x.shape), x.dtype, x.device)
            if key not in cache['zero']:
                if len(cache['zero']) >= cache['max_zero_shapes'] * len(self.branches):
                    cache['zero'].clear()
                cache['zero'][key] = branch(x)
            else:
                cache['hits'] += 1
            return cache['zero'][key]
        last = cache['last'].get(index)
        if last is not None and last[0].shape == x.shape and torch.equal(last[0], x):
            cache['hits'] += 1
            return last[1]
        out = branch(x)
        cache['last'][index] = (x, out)
        return out

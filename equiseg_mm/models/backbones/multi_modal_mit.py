"""Multi-branch encoder: one equal branch per modality (EQUISeg's encoder), MiT or any backbone.

Besides :class:`MultiModalMiT`, this file holds :func:`convert_segformer_mit_keys` (official
SegFormer ``mit_b*.pth`` key names -> mmseg's), which
``tools/model_converters/convert_mit_checkpoint.py`` uses.
"""
import copy
import importlib
import logging
import os.path as osp
import re
import warnings
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.logging import print_log
from mmengine.model import BaseModule, ModuleList
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor

from mmseg.models.backbones.mit import MixVisionTransformer
from mmseg.registry import MODELS
from ...utils import channel_slices
from ...utils.checkpoint import load_checkpoint_file

_SEGFORMER_PATCH_EMBED = re.compile(r'^patch_embed(\d+)\.(proj|norm)\.(.+)$')
_SEGFORMER_BLOCK = re.compile(r'^block(\d+)\.(\d+)\.(.+)$')
_SEGFORMER_STAGE_NORM = re.compile(r'^norm(\d+)\.(.+)$')
_SEGFORMER_FFN = {'mlp.fc1.': 'ffn.layers.0.', 'mlp.dwconv.dwconv.': 'ffn.layers.1.',
                  'mlp.fc2.': 'ffn.layers.4.'}
_MAX_NAMED = 8  # shape mismatches named in an error


def _public_name(module: nn.Module) -> str:
    """The class name a user configured (not that of a private fast-path subclass)."""
    return next(c.__name__ for c in type(module).__mro__ if not c.__name__.startswith('_'))


def convert_segformer_mit_keys(state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Convert an official SegFormer ``mit_b*.pth`` state dict to mmseg's MiT key names.

    ``patch_embed{i}.proj/norm`` -> ``layers.{i-1}.0.projection/norm``; ``block{i}.{j}.*`` ->
    ``layers.{i-1}.1.{j}.*`` with ``attn.q`` + ``attn.kv`` concatenated into
    ``attn.attn.in_proj_*``, ``attn.proj`` -> ``attn.attn.out_proj``, ``mlp.fc1/dwconv.dwconv/fc2``
    -> ``ffn.layers.0/1/4`` (linear weights reshaped to 1x1 convolutions); ``norm{i}`` ->
    ``layers.{i-1}.2``. The ImageNet classifier (``head.*``) is dropped; any other key is kept
    unchanged (so that loading reports it as unexpected).

    The same mapping as ``convert_mit`` of mmseg's ``tools/model_converters/mit2mmseg.py``,
    which the pip package ships only as a script for ``mim`` (``mmseg/.mim/tools/...``: not an
    importable module), so the backbone cannot call it; a test loads that script by path and
    checks that both give the same keys and tensors.

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


def _has_segformer_keys(keys) -> bool:
    """Whether any key has an official SegFormer name (``patch_embed1.proj.weight``,
    ``block1.0.attn.q.weight``, ...)."""
    return any(_SEGFORMER_PATCH_EMBED.match(k) or _SEGFORMER_BLOCK.match(k) for k in keys)


def _extract_backbone_state_dict(checkpoint: Mapping, branch_keys: Sequence[str],
                                 prefix: Optional[str] = None) -> 'OrderedDict[str, Tensor]':
    """The single-backbone state dict in a checkpoint, with the branch's key names.

    See :class:`MultiModalMiT` ("Pretrained weights") for the rule. ``branch_keys`` are the
    state-dict keys of one branch (all branches share them).

    Raises:
        ValueError: If the checkpoint holds no tensors, or ``prefix`` matches no key.
    """
    state_dict = checkpoint
    for wrapper in ('state_dict', 'model'):
        if isinstance(state_dict, Mapping) and isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
    if not isinstance(state_dict, Mapping):
        raise ValueError(f'expected a state dict (a mapping of names to tensors), got '
                         f'{type(state_dict).__name__}')
    state_dict = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                             for k, v in state_dict.items() if isinstance(v, Tensor))
    if not state_dict:
        raise ValueError('the checkpoint holds no tensors')
    if prefix is None and not any(k.startswith('backbone.') for k in branch_keys) and \
            any(k.startswith('backbone.') for k in state_dict):
        prefix = 'backbone.'
    if prefix:
        kept = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                           if k.startswith(prefix))
        if not kept:
            raise ValueError(f'no key starts with prefix {prefix!r} (keys such as '
                             f'{list(state_dict)[:3]})')
        dropped = sorted({k.split('.', 1)[0] + '.' for k in state_dict if not k.startswith(prefix)})
        if dropped:
            print_log(f'MultiModalMiT: kept the {prefix!r} keys of the checkpoint, dropped '
                      f'{len(state_dict) - len(kept)} others ({", ".join(dropped)})',
                      logger='current', level=logging.INFO)
        state_dict = kept
    if _has_segformer_keys(state_dict) and not _has_segformer_keys(branch_keys):
        state_dict = convert_segformer_mit_keys(state_dict)
    return state_dict


def _adapt_input_channels(weight: Tensor, channels: int) -> Tensor:
    """Adapt a first-layer kernel (O, C_src, k, k) to ``channels`` inputs: the mean over the
    source channels, repeated, times C_src / channels (keeps the response to an input whose
    channels are all equal)."""
    src = weight.shape[1]
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, channels, *([1] * (weight.dim() - 2))) * (src / channels)


def _is_input_kernel(value: Tensor, target: Tensor, in_channels: int) -> bool:
    """Whether a checkpoint tensor is a convolution kernel on the branch input that differs from
    the branch's only in its input channels: both 4-D, equal except in dim 1, and the branch's
    dim 1 is the branch's input channel count."""
    return (value.dim() == 4 and target.dim() == 4 and target.shape[1] == in_channels
            and value.shape[1] != in_channels and value.shape[0] == target.shape[0]
            and value.shape[2:] == target.shape[2:])


def _load_into_branch(branch: nn.Module, state_dict: Mapping[str, Tensor],
                      in_channels: int) -> Dict[str, List[str]]:
    """Load ``state_dict`` into ``branch`` with ``branch.load_state_dict(strict=False)`` (so the
    backbone's own load hooks apply), after adapting its input kernels to ``in_channels``.

    Returns:
        dict[str, list[str]]: ``missing`` (``num_batches_tracked`` left out, as mmengine does),
        ``unexpected`` and ``adapted`` (input-channel adapted) key names.

    Raises:
        ValueError: If a tensor's shape differs from the branch's other than as an input kernel
            (naming each key and both shapes), or no checkpoint key names a branch tensor.
    """
    own = branch.state_dict()
    if not any(k in own for k in state_dict):
        raise ValueError(f'none of its {len(state_dict)} keys (such as {list(state_dict)[:3]}) '
                         f'names a tensor of the branch (such as {list(own)[:3]})')
    to_load, adapted = OrderedDict(), []
    for key, value in state_dict.items():
        target = own.get(key)
        if target is not None and value.shape != target.shape and \
                _is_input_kernel(value, target, in_channels):
            value = _adapt_input_channels(value.float(), in_channels)
            adapted.append(key)
        to_load[key] = value
    mismatched = [k for k, v in to_load.items() if k in own and v.shape != own[k].shape]
    try:
        result = branch.load_state_dict(to_load, strict=False)
    except RuntimeError as err:
        named = [k for k in mismatched if f'size mismatch for {k}:' in str(err)] or mismatched
        if not named:
            raise
        more = f'; and {len(named) - _MAX_NAMED} more' if len(named) > _MAX_NAMED else ''
        raise ValueError('; '.join(
            f'size mismatch for {k}: checkpoint {tuple(state_dict[k].shape)}, branch '
            f'{tuple(own[k].shape)}' for k in named[:_MAX_NAMED]) + more) from err
    return dict(missing=[k for k in result.missing_keys if 'num_batches_tracked' not in k],
                unexpected=list(result.unexpected_keys), adapted=adapted)


def _pretrained_from_cfg(cfg: Optional[dict], where: str) -> Optional[dict]:
    """The ``type='Pretrained'`` dict of an init_cfg (None if it has none).

    Raises:
        ValueError: If a Pretrained entry sits in a list (one checkpoint for all branches).
    """
    if isinstance(cfg, Mapping) and cfg.get('type') == 'Pretrained':
        return dict(cfg)
    if isinstance(cfg, (list, tuple)) and any(
            isinstance(c, Mapping) and c.get('type') == 'Pretrained' for c in cfg):
        raise ValueError(f"{where}: give type='Pretrained' as a single dict, not in a list, "
                         f'got {cfg!r}')
    return None


def _build_branch(cfg: dict) -> nn.Module:
    """Build one branch from a registered backbone config.

    A scoped type such as ``'mmpretrain.ConvNeXt'`` imports ``mmpretrain.models`` first (which
    registers its backbones), so the type resolves from mmseg's registry through mmengine's
    scope prefix without ``custom_imports``.

    Raises:
        ImportError: If the scope's package is not installed or fails to import.
    """
    obj_type = cfg['type']
    if isinstance(obj_type, str) and '.' in obj_type:
        scope = obj_type.split('.', 1)[0]
        if scope != 'mmseg' and scope in MODULE2PACKAGE:
            try:
                importlib.import_module(f'{scope}.models')
            except ImportError as err:
                if isinstance(err, ModuleNotFoundError) and err.name == scope:
                    raise ImportError(
                        f"branch type {obj_type!r} needs the {scope!r} package, which is not "
                        f'installed (pip install {MODULE2PACKAGE[scope]})') from err
                raise ImportError(f'branch type {obj_type!r}: importing {scope}.models failed: '
                                  f'{err}') from err
    module = MODELS.build(cfg)
    if not isinstance(module, nn.Module):
        raise ValueError(f'branch type {obj_type!r} built a {type(module).__name__}, not a '
                         'backbone module')
    return module


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
    distributed training sees every parameter used. In a branch with BatchNorm (e.g. a ResNet)
    the absent samples still enter the batch statistics, so the present samples' gradients
    reach the branch through them; only LayerNorm branches such as MiT keep them fully apart.
    """
    present = torch.count_nonzero(x.detach(), dim=tuple(range(1, x.dim()))) > 0
    # no `if present.all()` shortcut: it would synchronise with the GPU at every branch
    return [torch.where(present.view(-1, *([1] * (o.dim() - 1))), o, o.detach())
            for o in outs]


def _record_modalities(module: 'MultiModalMiT', state_dict, prefix: str,
                       local_metadata: dict) -> None:
    """State-dict hook: record the modality names and input channels in the metadata."""
    local_metadata['modalities'] = list(module.modalities)
    local_metadata['in_channels'] = list(module.in_channels)


@MODELS.register_module()
class MultiModalMiT(BaseModule):
    """Equal-encoding multimodal backbone: one encoder branch per modality.

    Every modality gets its own branch with the same settings (no branch is privileged): an
    mmseg :class:`MixVisionTransformer` by default, or any registered backbone given by
    ``branch`` (e.g. ``dict(type='mmpretrain.ConvNeXt', ...)``, ``dict(type='ResNetV1c', ...)``).
    The input is the modalities stacked along channels in ``modalities`` order; the backbone
    splits it by ``in_channels`` and stacks the branch outputs per stage.

    Pretrained weights: one *single-backbone* checkpoint of the branch's architecture is loaded
    into every branch. It is given as ``init_cfg=dict(type='Pretrained', checkpoint=path)``
    (optionally with ``prefix`` and ``map_location``, as mmengine's ``Pretrained``), as
    ``pretrained=path`` (what mmseg's ``EncoderDecoder(pretrained=...)`` passes), or as the
    ``init_cfg`` (or ``pretrained``) inside the ``branch`` config (mmseg's way of writing a
    backbone's weights), which is then taken out of the branch and handled here. The rule:

    1. The state dict is the checkpoint's ``state_dict`` (else ``model``, else the checkpoint
       itself); non-tensor entries are dropped and a leading ``module.`` is stripped.
    2. With ``prefix``, only keys starting with it are kept, without it. Without ``prefix``, if
       some keys start with ``backbone.`` and the branch has no such key, only those are kept,
       without it (an mmpretrain classifier's ``head.``/``neck.``/``data_preprocessor.`` keys or
       an mmseg segmentor's heads are dropped).
    3. Official SegFormer ``mit_b*.pth`` names are converted with
       :func:`convert_segformer_mit_keys` when the branch does not use those names itself.
    4. A 4-D tensor whose shape equals the branch's except in dim 1, where the branch has its
       input channel count C, is a kernel on the input (the first convolution, e.g. MiT's
       ``layers.0.0.projection.weight``, ConvNeXt's ``downsample_layers.0.0.weight``, ResNet's
       ``conv1.weight``): it becomes the mean over the checkpoint's input channels, repeated C
       times and scaled by C_src / C, so an input with C equal channels gives the response the
       checkpoint kernel gives to C_src equal channels (paper silent; a common choice).
    5. Everything is loaded with the branch's ``load_state_dict(strict=False)`` (so backbone
       load hooks, e.g. mmpretrain Swin's, apply). Any other shape difference raises a
       ``ValueError`` naming each key and both shapes; a checkpoint sharing no key with the
       branch raises too. Missing (``num_batches_tracked`` aside) and unexpected keys are
       warned about in mmengine's wording; tensors the checkpoint lacks keep the branch's
       default initialisation.

    The branches' stage widths must equal the neck's ``in_channels`` (``CMTBNeck`` checks it
    at its first forward, naming both).

    Whole-model checkpoints: the backbone's state dict records its modality names and input
    channels (in the state dict's metadata, next to PyTorch's module versions). Loading a state
    dict into the backbone (``--resume``, ``load_from``, ``tools/test.py``, ``tools/infer.py``,
    the inference API) whose branch count, input channels or recorded modality names (order
    included) differ from the backbone's raises a ``ValueError`` naming both. With
    ``partial_checkpoint=True`` the checkpoint's branches are matched to this backbone's by
    modality name instead (e.g. to add a modality to a trained model): matched branches load,
    the others keep their initialisation and are named in a warning.

    Absent modalities: with gradients enabled, the outputs of a branch are detached at the
    samples whose whole input to that branch is zero (a modality dropped by the data
    preprocessor's modality dropout, or missing): their values are unchanged (what the branch
    computes for zeros, as at test time), but they train only the rest of the model, never the
    branch itself (see :func:`_stop_absent_gradients` for why the exact gradient is unusable).
    In eval mode without gradients, a branch whose input is zero for every sample of the batch
    does not run (``skip_absent_branches``): its output for zeros is a constant of its weights,
    computed once per input shape and reused by
    :class:`~equiseg_mm.models.utils.BranchOutputCache` (``branch_cache``), bit-identical to
    running it; a skipped branch's forward hooks do not fire.

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
        with_cp (bool | Sequence[bool]): Activation checkpointing of the MiT layers (mmseg's
            ``with_cp``: a layer's activations are recomputed in the backward pass instead of
            kept), for all stages or one bool per stage. It takes effect while the layer's
            input requires gradients. Defaults to False.
        branch (dict, optional): Config of any registered backbone used for every branch instead
            of MiT (the MiT arguments above are then ignored): an mmseg type (``'ResNetV1c'``)
            or another OpenMMLab package's with its scope (``'mmpretrain.ConvNeXt'``; that
            package's ``models`` module is imported when needed). Its ``in_channels`` is set per
            modality; it must return a tuple of (B, C_i, H_i, W_i) maps, e.g. mmpretrain's
            ConvNeXt with ``out_indices=(0, 1, 2, 3), gap_before_final_norm=False``, Swin with
            ``out_indices=(0, 1, 2, 3)`` (and ``pad_small_map=True`` when a stage map can be
            smaller than the window), ResNet with ``out_indices=(0, 1, 2, 3)``. A Pretrained
            ``init_cfg`` or a ``pretrained`` path in it is handled as described above.
            Defaults to None (MiT).
        skip_absent_branches (bool): In eval mode without gradients, reuse a branch's output
            for an all-zero input instead of running it (see "Absent modalities"); results are
            unchanged. Defaults to True.
        partial_checkpoint (bool): Allow loading a whole-model checkpoint (resume, ``load_from``,
            test, inference) whose modalities differ from this backbone's (see "Whole-model
            checkpoints"). Defaults to False.
        pretrained (str, optional): Checkpoint path, the same as
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``. Defaults to None.
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
                 with_cp: Union[bool, Sequence[bool]] = False,
                 branch: Optional[dict] = None,
                 skip_absent_branches: bool = True,
                 partial_checkpoint: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if pretrained is not None:
            if not isinstance(pretrained, str):
                raise ValueError(f'pretrained must be a checkpoint path, got {pretrained!r}')
            if init_cfg is not None:
                raise ValueError(f'give pretrained={pretrained!r} or init_cfg={init_cfg!r}, '
                                 'not both')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
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
        self.in_channels = [int(c) for c in in_channels]
        self.partial_checkpoint = bool(partial_checkpoint)
        self._register_state_dict_hook(_record_modalities)
        if branch is not None and not isinstance(branch, Mapping):
            raise ValueError(f'branch must be None (MiT) or a backbone config dict, got {branch!r}')
        if branch is not None and 'type' not in branch:
            raise ValueError("branch must name a registered backbone with 'type', "
                             f'got {dict(branch)!r}')
        _pretrained_from_cfg(init_cfg, 'init_cfg')  # rejects a Pretrained entry in a list
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
            if isinstance(with_cp, bool):
                with_cp = [with_cp] * num_stages
            if isinstance(with_cp, str) or not isinstance(with_cp, Sequence) or \
                    len(with_cp) != num_stages or not all(isinstance(f, bool) for f in with_cp):
                raise ValueError(f'with_cp must be a bool or one bool per stage '
                                 f'({num_stages}), got {with_cp!r}')
        if not isinstance(skip_absent_branches, bool):
            raise ValueError(f'skip_absent_branches must be True or False, '
                             f'got {skip_absent_branches!r}')
        self.branch_cfg = copy.deepcopy(dict(branch)) if branch is not None else None
        if self.branch_cfg is not None:
            self._take_branch_pretrained(self.branch_cfg)

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
                    act_cfg=act_cfg, norm_cfg=norm_cfg, with_cp=any(with_cp)))
                for layer, flag in zip(self.branches[-1].layers, with_cp):
                    for block in layer[1]:  # mmseg's TransformerEncoderLayer
                        block.with_cp = flag
            else:
                cfg = copy.deepcopy(self.branch_cfg)
                cfg['in_channels'] = channels
                self.branches.append(_build_branch(cfg))
        # not a module: no parameters, state-dict keys or device; imported here because
        # models/utils/fast_path.py imports this module
        from ..utils.branch_output_cache import BranchOutputCache
        #: BranchOutputCache | None: The zero-input outputs (None: every branch always runs).
        self.branch_cache = BranchOutputCache() if skip_absent_branches else None

    @property
    def num_modalities(self) -> int:
        """int: Number of modalities (branches)."""
        return len(self.modalities)

    def _take_branch_pretrained(self, cfg: dict) -> None:
        """Move a Pretrained ``init_cfg`` or a ``pretrained`` path out of the branch config into
        this module's ``init_cfg`` (so every branch gets the adapted loading).

        Raises:
            ValueError: If the weights are given twice or the backbone has its own init_cfg.
        """
        from_init = _pretrained_from_cfg(cfg.get('init_cfg'), 'branch init_cfg')
        path = cfg.get('pretrained')
        if path is not None and from_init is not None:
            raise ValueError(f'branch gives both pretrained={path!r} and init_cfg={from_init!r}')
        if path is None and from_init is None:
            return
        if path is not None and not isinstance(path, str):
            raise ValueError(f'branch pretrained must be a checkpoint path, got {path!r}')
        found = from_init or dict(type='Pretrained', checkpoint=path)
        if self.init_cfg is not None:
            raise ValueError(f'pretrained weights are given in the branch ({found!r}) while the '
                             f'backbone has init_cfg={self.init_cfg!r}; give one of them')
        cfg.pop('pretrained', None)
        if from_init is not None:
            cfg.pop('init_cfg')
        self.init_cfg = found

    def init_weights(self) -> None:
        """Initialise the branches; with a ``Pretrained`` init_cfg load it into every branch
        (see the class docstring for the rule)."""
        cfg = _pretrained_from_cfg(self.init_cfg, 'init_cfg')
        if cfg is None:
            super().init_weights()
            return
        if self._is_init:
            return
        if 'checkpoint' not in cfg:
            raise ValueError(f"init_cfg of type 'Pretrained' needs a checkpoint, got {cfg!r}")
        # each branch's own initialisation first: it stays for any key the checkpoint lacks
        self.init_cfg = None
        try:
            super().init_weights()
        finally:
            self.init_cfg = cfg
        path = cfg['checkpoint']
        map_location = cfg.get('map_location', 'cpu')
        checkpoint = load_checkpoint_file(path, map_location) if osp.isfile(path) else \
            CheckpointLoader.load_checkpoint(path, map_location=map_location, logger='current')
        kind = _public_name(self.branches[0])
        try:
            state_dict = _extract_backbone_state_dict(
                checkpoint, list(self.branches[0].state_dict()), cfg.get('prefix'))
        except ValueError as err:
            raise ValueError(f'MultiModalMiT: checkpoint {path}: {err}') from None
        reports = []
        for name, channels, branch in zip(self.modalities, self.in_channels, self.branches):
            try:
                report = _load_into_branch(branch, state_dict, channels)
            except ValueError as err:
                raise ValueError(f'MultiModalMiT: checkpoint {path} does not fit branch '
                                 f'{name!r} ({kind}, {channels} input channels): {err}') from None
            reports.append(report)
            adapted = f', adapted to {channels} input channels: {report["adapted"]}' \
                if report['adapted'] else ''
            print_log(f'MultiModalMiT: loaded {path} into branch {name!r} ({kind}){adapted}',
                      logger='current', level=logging.INFO)
        problems = []
        for name, report in zip(self.modalities, reports):
            msg = ''.join(f'{label} in source state_dict: {", ".join(report[kind_])}\n'
                          for kind_, label in (('unexpected', 'unexpected key'),
                                               ('missing', 'missing keys'))
                          if report[kind_])
            if msg:
                problems.append((name, msg))
        if problems:
            if len(problems) == len(reports) and len({m for _, m in problems}) == 1:
                text = f'every branch: {problems[0][1]}'
            else:
                text = ''.join(f'branch {name!r}: {m}' for name, m in problems)
            msg = f'MultiModalMiT: checkpoint {path} does not match {kind} exactly: ' + text
            warnings.warn(msg)
            print_log(msg, logger='current', level=logging.WARNING)
        self._is_init = True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        self._check_checkpoint_branches(state_dict, prefix, local_metadata)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def _check_checkpoint_branches(self, state_dict: dict, prefix: str, metadata: dict) -> None:
        """Raise ``ValueError`` when the checkpoint's branches do not fit this backbone (see
        "Whole-model checkpoints"); with ``partial_checkpoint``, rename and drop branch keys in
        ``state_dict`` so that each branch loads its modality's weights."""
        head = prefix + 'branches.'
        found = {int(k[len(head):].split('.', 1)[0]) for k in state_dict if k.startswith(head)}
        if not found:
            return  # no branch weights (e.g. a head-only or a single-backbone state dict)
        count = max(found) + 1
        recorded = metadata.get('modalities')
        names = list(recorded) if recorded else [f'branch {i}' for i in range(count)]
        # the input channels, read off the first kernel on the input (its dim 1)
        key = next((k for k, t in self.branches[0].state_dict().items()
                    if t.dim() == 4 and t.shape[1] == self.in_channels[0]), None)
        channels = [int(state_dict[f'{head}{i}.{key}'].shape[1])
                    if f'{head}{i}.{key}' in state_dict else None for i in range(count)]
        if (names == self.modalities if recorded else count == len(self.modalities)) and \
                all(c in (None, own) for c, own in zip(channels, self.in_channels)):
            return
        theirs = f'{names} with input channels {channels}'
        ours = f'{self.modalities} with input channels {self.in_channels}'
        if not self.partial_checkpoint:
            raise ValueError(
                f'the checkpoint was trained with modalities {theirs}, this model has {ours}. '
                'Use a checkpoint of this model, or set model.backbone.partial_checkpoint=True '
                'to load the branches whose modality names match (the others stay freshly '
                'initialised)')
        moved, fresh = {}, []
        for j, (name, c) in enumerate(zip(self.modalities, self.in_channels)):
            i = names.index(name) if name in names else None
            if i is None or channels[i] not in (None, c):
                fresh.append(name)
                continue
            moved.update({f'{head}{j}.{k[len(f"{head}{i}."):]}': state_dict[k]
                          for k in state_dict if k.startswith(f'{head}{i}.')})
        for key in [k for k in state_dict if k.startswith(head)]:
            del state_dict[key]
        state_dict.update(moved)
        msg = (f'MultiModalMiT: checkpoint branches {theirs} loaded by modality name into '
               f'{ours}; freshly initialised: {fresh or "none"}')
        warnings.warn(msg)
        print_log(msg, logger='current', level=logging.WARNING)

    #: stacks the branch outputs of a stage (the fast path stores them channels-innermost)
    stack = staticmethod(torch.stack)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Encode each modality with its own branch.

        Args:
            x (Tensor): Stacked modalities, shape (B, sum(in_channels), H, W).

        Returns:
            tuple[Tensor]: One tensor per output stage, shape (B, N, C_i, H_i, W_i), the
            modalities in ``modalities`` order.
        """
        if x.dim() != 4 or x.shape[1] != sum(self.in_channels):
            raise ValueError(
                f'MultiModalMiT expects (B, {sum(self.in_channels)}, H, W) for modalities '
                f'{self.modalities} with channels {self.in_channels}, got {tuple(x.shape)}')
        inputs = [x[:, self._slices[name]] for name in self.modalities]
        cache = getattr(self, 'branch_cache', None)  # None also in a model pickled without it
        if cache is not None:  # in eval mode the branches of absent modalities do not run
            outs = cache(self.branches, inputs)
        else:
            outs = [branch(x_m) for branch, x_m in zip(self.branches, inputs)]
        per_branch = [self._branch_maps(n, o, x_m)
                      for n, (o, x_m) in enumerate(zip(outs, inputs))]
        return tuple(self.stack([outs[i] for outs in per_branch], dim=1)
                     for i in range(len(per_branch[0])))

    def train(self, mode: bool = True) -> 'MultiModalMiT':
        """Set the mode (and clear the branch output cache: weights may change meanwhile)."""
        if getattr(self, 'branch_cache', None) is not None:
            self.branch_cache.clear()
        return super().train(mode)

    def _branch_maps(self, index: int, outs, x: Tensor) -> Sequence[Tensor]:
        """Branch ``index``'s outputs ``outs`` for input ``x`` as a sequence of (B, C, H, W)
        maps (a single tensor is one stage).

        Raises:
            ValueError: If an output is not a 4-D map (e.g. pooled features).
        """
        branch = self.branches[index]
        if isinstance(outs, Tensor):
            outs = (outs, )
        if not isinstance(outs, Sequence) or not outs or not all(
                isinstance(o, Tensor) and o.dim() == 4 for o in outs):
            got = [tuple(o.shape) if isinstance(o, Tensor) else type(o).__name__
                   for o in (outs if isinstance(outs, Sequence) else [outs])]
            raise ValueError(
                f'branch {self.modalities[index]!r} ({_public_name(branch)}) must return '
                f'(B, C, H, W) maps per stage, got {got} (mmpretrain ConvNeXt needs '
                'gap_before_final_norm=False; select stages with out_indices)')
        return _stop_absent_gradients(x, outs) if torch.is_grad_enabled() else outs

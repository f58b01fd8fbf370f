"""Parameters and FLOPs of a segmentor's inference path, part by part (shared by
``tools/analysis_tools/get_flops.py``, ``tools/analysis_tools/benchmark.py`` and
``tools/run_demo.py``).

What is counted: the tensor-mode path ``decode_head(neck(backbone(x)))`` for one image. The
auxiliary head (EQUISeg's SGM head) only runs in loss mode and costs nothing at inference; its
parameters are listed apart. :func:`load_model_cfg` drops pretrained ``init_cfg`` entries
(nothing is loaded) and :func:`build_segmentor` builds SyncBN as BN (same arithmetic).

How: mmengine's ``FlopAnalyzer`` (the fvcore counter) traces the model with ``torch.jit.trace``
and counts the operators it has a formula for, with **one fused multiply-add counted as one
FLOP** (fvcore's convention; multiply by 2 for "two FLOPs per MAC" figures). Two handles are
added here, because the stock counter skips them: ``aten::scaled_dot_product_attention``
(Q K^T and A V: L * S * (d_qk + d_v) per batch-head; mmseg's stock attention with
``need_weights=True`` runs the same two products as ``bmm``, which the stock counter already
counts) and ``aten::avg_pool2d`` (k_h * k_w per output element, what a depth-wise convolution
with that kernel counts). Still skipped (reported under "not counted"): element-wise operators
(add, mul, div, sigmoid, GELU, softmax), reductions and selections (sum, max, topk, where) and
layout operators. They are cheap in arithmetic but memory-bound, so the FLOP count understates
their run time.
"""
import copy
import warnings
from collections import Counter, OrderedDict
from math import prod
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import Config, ConfigDict
from mmengine.model import revert_sync_batchnorm
from torch.profiler import record_function

from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

__all__ = ['EXTRA_HANDLES', 'TensorModeModel', 'load_model_cfg', 'build_segmentor',
           'input_channels', 'num_params', 'flop_analyzer', 'complexity', 'format_report']


def _sdpa_flop(inputs: List, outputs: List) -> int:
    """Q K^T and A V of ``scaled_dot_product_attention``: L * S * (E + Ev) per batch-head."""
    q, k, v = (get_shape(value) for value in inputs[:3])
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def _avg_pool2d_flop(inputs: List, outputs: List) -> int:
    """k_h * k_w operations per output element (as a depth-wise convolution)."""
    kernel = _int_list(inputs[1])
    kh, kw = kernel * 2 if len(kernel) == 1 else kernel[:2]
    return prod(get_shape(outputs[0])) * kh * kw


def _int_list(value) -> List[int]:
    """The ints of a traced ``int[]`` argument (a constant or a ``prim::ListConstruct``)."""
    constant = value.toIValue()
    if constant is None and value.node().kind() == 'prim::ListConstruct':
        constant = [v.toIValue() for v in value.node().inputs()]
    return [int(c) for c in (constant if isinstance(constant, (list, tuple)) else [constant])]


#: Operators the stock counter skips that these tools count (see the module docstring).
EXTRA_HANDLES = {'aten::scaled_dot_product_attention': _sdpa_flop,
                 'aten::avg_pool2d': _avg_pool2d_flop}


class TensorModeModel(nn.Module):
    """The inference path of an mmseg ``EncoderDecoder``: decode_head(neck(backbone(x))).

    The parts are the segmentor's own modules (shared, not copied), so FLOP and profiler
    results name them ``backbone.*``, ``neck.*`` and ``decode_head.*``. Each part runs under a
    ``torch.profiler.record_function`` label of the same name.

    Args:
        segmentor (nn.Module): An ``EncoderDecoder`` (or anything with ``backbone``, an optional
            ``neck`` and ``decode_head``).
    """

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        self.backbone = segmentor.backbone
        self.neck = segmentor.neck if getattr(segmentor, 'with_neck', False) else None
        self.decode_head = segmentor.decode_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with record_function('backbone'):
            feats = self.backbone(x)
        if self.neck is not None:
            with record_function('neck'):
                feats = self.neck(feats)
        with record_function('decode_head'):
            return self.decode_head(feats)


def load_model_cfg(config: str, modalities: Optional[Sequence[str]] = None,
                   cfg_options: Optional[dict] = None) -> ConfigDict:
    """The ``model`` of a config file, without pretrained initialisation.

    Args:
        config (str): Config path.
        modalities (Sequence[str], optional): Run with these modalities instead of the
            config's. Channels per modality come from the config's ``modalities`` /
            ``modality_channels`` (3 for a name it lacks). Defaults to None.
        cfg_options (dict, optional): Overrides merged into the config first (as
            ``--cfg-options``), e.g. ``{'model.neck.aux_summary': 'per_primary'}``. Defaults to
            None.

    Returns:
        ConfigDict: The model config.
    """
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = copy.deepcopy(cfg.model)
    for part in ('backbone', 'neck', 'decode_head', 'auxiliary_head'):
        if isinstance(model.get(part), dict):
            model[part].pop('init_cfg', None)
    model.pop('pretrained', None)
    if modalities is not None:
        modalities = list(modalities)
        known = dict(zip(cfg.get('modalities', []), cfg.get('modality_channels', [])))
        channels = [int(known.get(m, 3)) for m in modalities]
        if model.backbone.get('type') != 'MultiModalMiT':
            raise ValueError(f'--modalities needs a MultiModalMiT backbone, the config has '
                             f'{model.backbone.get("type")!r}')
        model.backbone.update(modalities=modalities, in_channels=channels)
        if isinstance(model.get('neck'), dict) and 'num_modalities' in model.neck:
            model.neck.num_modalities = len(modalities)
        pre = model.get('data_preprocessor')
        if isinstance(pre, dict) and 'modalities' in pre:
            pre.update(modalities=modalities, channels=channels)
    return model


def build_segmentor(model_cfg: dict) -> nn.Module:
    """Build a segmentor from a model config, in eval mode, SyncBN reverted to BN."""
    register_all_modules(init_default_scope=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = MODELS.build(copy.deepcopy(model_cfg))
    return revert_sync_batchnorm(model).eval()


def input_channels(segmentor: nn.Module) -> int:
    """Channels of the stacked input the backbone expects (its ``in_channels``, else those of
    its first convolution, e.g. mmseg's ``MixVisionTransformer``)."""
    channels = getattr(segmentor.backbone, 'in_channels', None)
    if channels is None:
        first = next(m for m in segmentor.backbone.modules() if isinstance(m, nn.Conv2d))
        return first.in_channels
    return sum(channels) if isinstance(channels, (list, tuple)) else int(channels)


def num_params(module: Optional[nn.Module]) -> int:
    """Number of parameters of a module (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def flop_analyzer(model: nn.Module, inputs: Tuple) -> FlopAnalyzer:
    """mmengine's ``FlopAnalyzer`` with the :data:`EXTRA_HANDLES`, warnings off."""
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**EXTRA_HANDLES)
    analyzer.set_op_handle('profiler::_record_function_enter_new', None,  # the part labels
                           'profiler::_record_function_exit', None)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    return analyzer


def _parts(model: TensorModeModel) -> List[Tuple[str, str]]:
    """(label, module name) of the parts to report: the backbone branches (or the backbone),
    the neck, its stages (labels starting with two spaces: already in the neck's total) and the
    decode head."""
    parts = []
    branches = getattr(model.backbone, 'branches', None)
    if branches is not None:
        names = getattr(model.backbone, 'modalities', [str(i) for i in range(len(branches))])
        parts += [(f'backbone[{m}]', f'backbone.branches.{i}') for i, m in enumerate(names)]
    else:
        parts.append(('backbone', 'backbone'))
    if model.neck is not None:
        parts.append(('neck', 'neck'))
        stages = getattr(model.neck, 'stages', None)
        if stages is not None:
            parts += [(f'  neck.stage{i + 1}', f'neck.stages.{i}') for i in range(len(stages))]
    parts.append(('decode_head', 'decode_head'))
    return parts


def complexity(segmentor: nn.Module, shape: Sequence[int] = (1024, 1024)) -> Dict:
    """Parameters and FLOPs of a segmentor's tensor mode for one image of ``shape``.

    Args:
        segmentor (nn.Module): An ``EncoderDecoder`` (eval mode).
        shape (Sequence[int]): Input (H, W). Defaults to (1024, 1024).

    Returns:
        dict: ``params`` (whole model), ``params_inference`` (backbone + neck + decode head),
        ``params_auxiliary`` (training-only heads; None without one), ``flops`` (total,
        1 MAC = 1 FLOP), ``parts`` (label -> dict(params, flops); labels that start with two
        spaces are sub-parts of the row above them), ``by_operator`` (FLOPs per counted
        operator) and ``not_counted`` (operator -> number of calls the counter skipped).
    """
    model = TensorModeModel(segmentor).eval()
    device = next(segmentor.parameters()).device
    x = torch.randn(1, input_channels(segmentor), *shape, device=device)
    with torch.no_grad():
        analyzer = flop_analyzer(model, (x, ))
        total = analyzer.total()
        by_module = analyzer.by_module()
        parts = OrderedDict()
        for label, name in _parts(model):
            parts[label] = dict(params=num_params(model.get_submodule(name)),
                                flops=int(by_module[name]))
        counted = sum(p['flops'] for k, p in parts.items() if not k.startswith(' '))
        if total != counted:  # anything outside the listed parts
            parts['other'] = dict(params=0, flops=int(total - counted))
        by_operator = dict(analyzer.by_operator())
        skipped = dict(Counter(analyzer.unsupported_ops()))
    aux = getattr(segmentor, 'auxiliary_head', None)
    return dict(
        shape=list(shape), params=num_params(segmentor), params_inference=num_params(model),
        params_auxiliary=num_params(aux) if isinstance(aux, nn.Module) else None,
        flops=int(total), parts=parts, by_operator={k: int(v) for k, v in by_operator.items()},
        not_counted=skipped)


def format_report(name: str, info: Dict) -> str:
    """The :func:`complexity` result as text."""
    h, w = info['shape']
    lines = [f'{name} at {h}x{w} (1 image, tensor mode; 1 multiply-add = 1 FLOP)',
             f'{"part":<20s}{"params (M)":>12s}{"GFLOPs":>10s}{"share":>8s}']
    for label, part in info['parts'].items():
        lines.append(f'{label:<20s}{part["params"] / 1e6:12.3f}{part["flops"] / 1e9:10.2f}'
                     f'{100 * part["flops"] / max(info["flops"], 1):7.1f}%')
    lines.append(f'{"total (inference)":<20s}{info["params_inference"] / 1e6:12.3f}'
                 f'{info["flops"] / 1e9:10.2f}')
    if info['params_auxiliary'] is not None:
        lines.append(f'{"auxiliary head":<20s}{info["params_auxiliary"] / 1e6:12.3f}'
                     '  (training only: no FLOPs at inference)')
    lines.append(f'{"total (model)":<20s}{info["params"] / 1e6:12.3f}')
    ops = ', '.join(f'{k.replace("aten::", "")} {v / 1e9:.2f}'
                    for k, v in sorted(info['by_operator'].items(), key=lambda kv: -kv[1]))
    lines.append(f'GFLOPs by operator: {ops}')
    skipped = ', '.join(f'{k.replace("aten::", "")} x{v}'
                        for k, v in sorted(info['not_counted'].items(), key=lambda kv: -kv[1]))
    lines.append(f'not counted (element-wise / selection ops, calls): {skipped or "none"}')
    return '\n'.join(lines)

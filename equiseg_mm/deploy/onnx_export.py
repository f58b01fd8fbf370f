"""Export a multimodal segmentor to ONNX, and compare the exported model with the eager one.

The exporter is PyTorch's dynamo-based one (``torch.onnx.export(..., dynamo=True)``, which
writes the graph through onnxscript) at opset :data:`ONNX_OPSET`; the TorchScript exporter
stops at ``aten::count_nonzero`` and has no ``torch.cond``. ``onnx``, ``onnxscript`` and
``onnxruntime`` are imported inside the functions, never by ``import equiseg_mm``.
"""
import contextlib
import copy
import json
import logging
import os
import os.path as osp
import time
import warnings
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..models import get_multimodal_preprocessor
from ..utils import modality_subsets, subset_name, unwrap_model
from .deploy_segmentor import DeploySegmentor
from .ort_segmentor import META_KEY, ORTSegmentor

__all__ = ['ONNX_OPSET', 'SIZE_DIVISOR', 'export_onnx', 'verify_onnx']

#: The ONNX opset the exporter writes by default.
ONNX_OPSET = 18
#: With ``dynamic_shape``, the input height and width are multiples of this (at least twice).
SIZE_DIVISOR = 64


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


#: exporter loggers whose warnings are about the exporter's own passes, not the model
_QUIET_LOGGERS = ('onnxscript.optimizer._constant_folding',
                  'onnx_ir.passes.common.initializer_deduplication')


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes on its own passes (constant folding skipped for ops with
    several outputs, initialisers not deduplicated, dynamic axes sharing a name)."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='# The axis name')
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _plain_copy(segmentor: nn.Module) -> nn.Module:
    """A copy of ``segmentor`` that computes as written, without the fast path.

    The fast path's speed-ups are for PyTorch's CPU kernels: in an ONNX graph its channels-last
    views become transposes (onnxruntime runs the plain graph of EQUISeg-B0 faster), and they
    turn map sizes into Python ints, which the exporter would fix inside a dynamic-shape graph.
    """
    from ..models.utils import fast_path
    plain = {fast: base for base, fast in getattr(fast_path, '_FAST', {}).items()}
    no_weights = getattr(fast_path, '_NoWeightsMultiheadAttention', None)
    segmentor = copy.deepcopy(segmentor)
    for m in segmentor.modules():
        if type(m) in plain:
            m.__class__ = plain[type(m)]
        elif no_weights is not None and type(m) is no_weights:
            m.__class__ = nn.MultiheadAttention
    return segmentor


def export_onnx(model: nn.Module,
                output_file: str,
                shape: Optional[Sequence[int]] = None,
                dynamic_shape: bool = False,
                with_logits: bool = False,
                skip_absent: Optional[bool] = None,
                opset_version: int = ONNX_OPSET) -> dict:
    """Export ``model`` as :class:`DeploySegmentor` computes it, check the file, record metadata.

    The graph is the model's plain computation (a copy without the fast path: the same
    outputs up to float rounding).

    Graph inputs: one float32 (B, C_m, H, W) tensor per modality, named by the modality, as the
    loader produces it (before normalisation, BGR for 3-channel files), and ``present``, an
    (N,) bool mask. Outputs: ``labels`` (B, H, W) int64 and, with ``with_logits``, ``logits``
    (B, K, H, W) float32.

    Fixed shape (default): B = 1 and (H, W) = ``shape``; absent branches are skipped (one ONNX
    ``If`` per branch, the branch's zero-input maps stored in the file) unless ``skip_absent``
    is False. ``dynamic_shape``: B, H and W are free (``shape`` only sizes the example input),
    and an absent modality's input is zeroed and its branch runs (its zero-input maps depend on
    the size, so there is nothing to store).

    The file's ``metadata_props`` hold, under ``'equiseg_mm'``, a JSON object: ``modalities``,
    ``channels``, ``inputs``, ``mask``, ``outputs``, ``shape`` (None when dynamic),
    ``skip_absent``, ``num_classes``, ``align_corners``, ``threshold``, ``bgr_to_rgb`` (the
    flipped modalities), ``dataset_meta``, ``opset``, ``exporter`` and ``torch``.
    ``onnx.checker.check_model`` runs on the written file.

    Args:
        model (nn.Module): The segmentor in eval mode (e.g. from
            :func:`~equiseg_mm.apis.init_multimodal_model`); it is not changed.
        output_file (str): The ``.onnx`` file to write (folders are created).
        shape (Sequence[int], optional): (H, W). Defaults to None: the data preprocessor's
            ``size`` (the training crop).
        dynamic_shape (bool): Free batch and size. Defaults to False.
        with_logits (bool): Also output the logits. Defaults to False.
        skip_absent (bool, optional): See :class:`DeploySegmentor`. Defaults to None (whenever
            possible).
        opset_version (int): ONNX opset. Defaults to :data:`ONNX_OPSET`.

    Returns:
        dict: The recorded metadata, plus ``export_s`` (seconds spent exporting and checking).

    Raises:
        ValueError: No shape given or configured, a bad ``output_file`` or any reason of
            :class:`DeploySegmentor`.
    """
    import onnx
    if not str(output_file).endswith('.onnx'):
        raise ValueError(f'output_file must name a .onnx file, got {str(output_file)!r}')
    segmentor = unwrap_model(model)
    pre = get_multimodal_preprocessor(segmentor, 'export_onnx')
    if shape is None:
        shape = getattr(pre, 'size', None)
        if shape is None:
            raise ValueError('give the input shape (H, W): the data preprocessor has no size')
    shape = tuple(int(s) for s in shape)
    start = time.perf_counter()
    deploy = DeploySegmentor(_plain_copy(segmentor), shape=None if dynamic_shape else shape,
                             skip_absent=skip_absent, with_logits=with_logits).eval()
    dynamic_shapes = None
    if dynamic_shape:
        # sizes 64 * k: every stage's map divides by its attention's spatial reduction, so
        # the exporter's shape algebra stays exact; examples avoid the sizes 0 and 1, which
        # torch.export specialises
        d = SIZE_DIVISOR
        shape = tuple(max(2 * d, -(-s // d) * d) for s in shape)
        dims = {0: torch.export.Dim('batch', min=1), 2: d * torch.export.Dim('h', min=2),
                3: d * torch.export.Dim('w', min=2)}
        # forward(*args): one entry, the tuple of every input
        dynamic_shapes = (tuple(dict(dims) for _ in deploy.modalities) + (None, ), )
    example = deploy.example_inputs(batch=2 if dynamic_shape else 1, shape=shape)
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            deploy, example, dynamo=True, opset_version=opset_version,
            input_names=deploy.input_names, output_names=deploy.output_names,
            dynamic_shapes=dynamic_shapes, verbose=False)
    head = segmentor.decode_head
    deploy_modalities = deploy.modalities
    meta = dict(
        format_version=1, modalities=deploy.modalities, channels=deploy.channels,
        inputs=deploy.modalities, mask='present', outputs=deploy.output_names,
        shape=None if dynamic_shape else list(shape), skip_absent=deploy.skip_absent,
        batch=None if dynamic_shape else 1,
        size_divisor=SIZE_DIVISOR if dynamic_shape else None,
        num_classes=int(head.num_classes), align_corners=bool(head.align_corners),
        threshold=float(getattr(head, 'threshold', None) or 0.3),
        bgr_to_rgb=[m for m, f in zip(deploy.modalities, deploy.flip) if f],
        dataset_meta=_json_safe(copy.deepcopy(getattr(segmentor, 'dataset_meta', None) or {})),
        opset=int(opset_version), exporter='torch.onnx.export(dynamo=True)',
        torch=torch.__version__)
    program.model.metadata_props[META_KEY] = json.dumps(meta)
    folder = osp.dirname(osp.abspath(output_file))
    os.makedirs(folder, exist_ok=True)
    with _quiet_exporter():
        program.save(str(output_file))
    onnx.checker.check_model(str(output_file))
    del deploy  # the plain copy and its stored maps
    if dynamic_shape:  # a size the exporter has not seen: no shape was baked in
        other = (shape[0] + SIZE_DIVISOR, shape[1] + SIZE_DIVISOR)
        try:
            row = verify_onnx(segmentor, output_file, shape=other,
                              subsets=[list(deploy_modalities)])[0]
            problem = None if row['agreement'] >= 0.999 else \
                f'labels agree with the eager model on {row["agreement"]:.2%} of the pixels'
        except Exception as exc:  # onnxruntime's failure, e.g. a Reshape to a fixed size
            problem = f'{type(exc).__name__}: {exc}'
        if problem:
            raise RuntimeError(
                f'the dynamic-shape export {output_file} fails at {other}, a size the exporter '
                f'did not see ({problem}): the exporter fixed a size inside the graph; '
                'export with a fixed --shape instead')
    return dict(meta, export_s=time.perf_counter() - start)


def _eager(model: nn.Module, inputs: Mapping[str, np.ndarray], missing: Sequence[str]):
    """The eager prediction of one raw frame (as the inference API runs it)."""
    from mmseg.structures import SegDataSample
    pre = get_multimodal_preprocessor(model)
    stacked = torch.from_numpy(np.concatenate([inputs[n] for n in pre.spec.names], 0))
    hw = tuple(stacked.shape[1:])
    sample = SegDataSample(metainfo=dict(img_shape=hw, ori_shape=hw))
    with pre.protocol(missing=missing, ratio=1.0), torch.no_grad():
        out = model.test_step(dict(inputs=[stacked], data_samples=[sample]))[0]
    return out.pred_sem_seg.data.cpu().numpy(), out.seg_logits.data.cpu().numpy()


def verify_onnx(model: nn.Module,
                onnx_file: str,
                shape: Optional[Sequence[int]] = None,
                subsets: Optional[Sequence[Sequence[str]]] = None,
                inputs: Optional[Mapping[str, np.ndarray]] = None,
                seed: int = 0,
                device: str = 'cpu') -> List[Dict]:
    """Compare the exported model with the eager one on every modality subset.

    Both get the same raw frame (``inputs``, else seeded uniform values in [0, 255]); the eager
    model runs ``test_step`` under ``protocol(missing=...)`` (as the inference API), the file
    runs in onnxruntime with the mask of the subset.

    Args:
        model (nn.Module): The eager segmentor the file was exported from.
        onnx_file (str): The exported file.
        shape (Sequence[int], optional): (H, W) of the random frame. Defaults to None (the
            file's fixed shape).
        subsets (Sequence[Sequence[str]], optional): Defaults to None (every non-empty subset).
        inputs (Mapping[str, np.ndarray], optional): Modality -> (C, H, W) raw array.
            Defaults to None (random).
        seed (int): Seed of the random frame. Defaults to 0.
        device (str): onnxruntime's device. Defaults to 'cpu'.

    Returns:
        list[dict]: Per subset: ``subset`` ('rgb+depth'), ``agreement`` (fraction of pixels
        with equal labels), ``max_logit_diff`` (largest absolute difference of the logits, or
        None when the file has no logits), ``pixels``.
    """
    pre = get_multimodal_preprocessor(model, 'verify_onnx')
    ort_model = ORTSegmentor(onnx_file, copy.deepcopy(pre).cpu(), device=device)
    if inputs is None:
        hw = tuple(shape or ort_model.meta['shape'] or ())
        if len(hw) != 2:
            raise ValueError('give a shape (H, W): the file has a dynamic shape')
        rng = np.random.default_rng(seed)
        inputs = {n: rng.uniform(0, 255, (c, ) + hw).astype(np.float32)
                  for n, c in zip(pre.spec.names, pre.spec.channels)}
    rows = []
    for subset in (subsets or modality_subsets(pre.spec.names)):
        subset = pre.spec.select(subset)
        missing = [n for n in pre.spec.names if n not in subset]
        labels, logits = _eager(model, inputs, missing)
        out = ort_model.run({n: inputs[n] for n in subset}, subset)
        diff = float(np.abs(out['logits'][0] - logits).max()) if 'logits' in out else None
        rows.append(dict(subset=subset_name(subset), pixels=int(labels.size),
                         agreement=float((out['labels'] == labels).mean()),
                         max_logit_diff=diff))
    return rows

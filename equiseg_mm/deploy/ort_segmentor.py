"""An exported EQUISeg model run by onnxruntime, behind the segmentor interface of the inference
API and the missing-modality test loop."""
import json
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.structures import PixelData
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from ..models import get_multimodal_preprocessor

__all__ = ['ORTSegmentor']

#: key of the exporter's metadata in the ONNX file's ``metadata_props``
META_KEY = 'equiseg_mm'
_OPT_LEVELS = ('disable', 'basic', 'extended', 'all')

ArrayLike = Union[np.ndarray, torch.Tensor]


def _providers(device: str) -> list:
    """onnxruntime's execution providers for a torch-style device string."""
    import onnxruntime as ort
    if device == 'cpu':
        return ['CPUExecutionProvider']
    if device == 'cuda' or device.startswith('cuda:'):
        available = ort.get_available_providers()
        if 'CUDAExecutionProvider' not in available:
            raise ValueError(f'device {device!r} needs onnxruntime\'s CUDAExecutionProvider '
                             f'(the onnxruntime-gpu package); this onnxruntime has {available}')
        index = int(device.split(':', 1)[1]) if ':' in device else 0
        return [('CUDAExecutionProvider', dict(device_id=index)), 'CPUExecutionProvider']
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


@MODELS.register_module()
class ORTSegmentor(BaseModel):
    """A model written by :func:`~equiseg_mm.deploy.export_onnx`, run by onnxruntime.

    It offers what the inference API and :class:`~equiseg_mm.engine.MissingModalityTestLoop`
    use of a segmentor: ``data_preprocessor`` (the config's
    :class:`~equiseg_mm.models.MultiModalSegDataPreProcessor`, whose ``protocol()`` sets the
    missing modalities), ``test_step`` / ``val_step`` returning ``SegDataSample`` with
    ``pred_sem_seg`` (and ``seg_logits`` when the file has them), plus :meth:`run` on
    arrays. Build it with :func:`~equiseg_mm.apis.init_multimodal_model` (a ``.onnx`` file as
    the checkpoint), or in a config as ``model = dict(type='ORTSegmentor', onnx_file=...,
    data_preprocessor=...)``.

    ``test_step`` runs the data preprocessor (its checks, and the RMM / NM settings) and feeds
    the graph one sample at a time: under an EMM setting (``missing_ratio`` 1, no noise) the
    raw inputs and the mask of the present modalities (absent branches skipped when the file
    stores their zero-input maps); under RMM or NM the preprocessor's output turned back into
    raw values (a zeroed element becomes the channel mean, which the graph normalises to
    exactly 0) with every modality marked present. A frame whose ``ori_shape`` differs from its
    input size (a resizing test pipeline) needs a file exported with logits, which are resized
    as mmseg's ``postprocess_result`` does.

    Args:
        onnx_file (str): The exported model.
        data_preprocessor (dict | nn.Module): The config's data preprocessor; its modalities
            and channels must equal the file's.
        device (str): 'cpu' (``CPUExecutionProvider``) or 'cuda[:N]' (``CUDAExecutionProvider``
            of the onnxruntime-gpu package). Defaults to 'cpu'.
        threads (int, optional): onnxruntime's intra-op threads. Defaults to None
            (onnxruntime's default: one per physical core).
        graph_optimization (str): onnxruntime's graph optimisation level: 'disable', 'basic',
            'extended' or 'all'. Defaults to 'all'.
        init_cfg (dict, optional): Unused (nothing to initialise). Defaults to None.

    Raises:
        FileNotFoundError: No ``onnx_file``.
        ValueError: The file was not written by ``export_onnx``, or its modalities differ from
            the preprocessor's (names both), or a bad ``device`` / option.
    """

    def __init__(self,
                 onnx_file: str,
                 data_preprocessor: Union[dict, nn.Module],
                 device: str = 'cpu',
                 threads: Optional[int] = None,
                 graph_optimization: str = 'all',
                 init_cfg: Optional[dict] = None) -> None:
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        pre = get_multimodal_preprocessor(self, 'ORTSegmentor')
        onnx_file = str(onnx_file)
        if not osp.isfile(onnx_file):
            raise FileNotFoundError(f'ONNX file {onnx_file!r} does not exist')
        if graph_optimization not in _OPT_LEVELS:
            raise ValueError(f'graph_optimization must be one of {_OPT_LEVELS}, got '
                             f'{graph_optimization!r}')
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f'threads must be None or an int >= 1, got {threads!r}')
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            'disable': ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            'extended': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[graph_optimization]
        if threads is not None:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only (not the exporter's unused initialisers)
        self.onnx_file = onnx_file
        self.device_name = device
        self.session = ort.InferenceSession(onnx_file, options, providers=_providers(device))
        text = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if text is None:
            raise ValueError(f'{onnx_file} has no {META_KEY!r} metadata: export it with '
                             'tools/deployment/pytorch2onnx.py (equiseg_mm.deploy.export_onnx)')
        #: dict: What the exporter recorded (modalities, channels, shape, outputs, ...).
        self.meta = json.loads(text)
        if (list(pre.spec.names), list(pre.spec.channels)) != \
                (self.meta['modalities'], self.meta['channels']):
            raise ValueError(
                f'{onnx_file} was exported for modalities {self.meta["modalities"]} with '
                f'channels {self.meta["channels"]}; the config\'s data preprocessor has '
                f'{list(pre.spec.names)} with {list(pre.spec.channels)}')
        self.modalities: List[str] = list(self.meta['modalities'])
        self._outputs = [o.name for o in self.session.get_outputs()]

    # --- arrays in, arrays out ------------------------------------------------------------
    def run(self, inputs: Mapping[str, Optional[ArrayLike]],
            present: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        """One forward of the graph on arrays.

        Args:
            inputs (Mapping[str, array | None]): Modality name -> (C, H, W) or (1, C, H, W)
                array as the loader produces it (values before normalisation, 3-channel files
                in BGR order), cast to float32. An absent modality may be left out or None
                (zeros are fed; its value never matters).
            present (Sequence[str], optional): The present modalities. Defaults to None (the
                names in ``inputs`` with a value).

        Returns:
            dict[str, np.ndarray]: ``labels`` (B, H, W) int64, and ``logits`` (B, K, H, W)
            float32 when the file has them.

        Raises:
            ValueError: An unknown modality name (in ``inputs`` or ``present``), no present
                modality, a present modality without an input, or an input of the wrong
                shape (names the modality, the expected and the got shape).
        """
        names = self.modalities
        unknown = [n for n in list(inputs) + list(present or ()) if n not in names]
        if unknown:
            raise ValueError(f'unknown modalities {unknown}; this model\'s are {names}')
        if present is None:
            present = [n for n in names if inputs.get(n) is not None]
        present = [n for n in names if n in present]
        if not present:
            raise ValueError(f'no modality is present; at least one of {names} must be')
        feeds = {}
        for name in names:
            x = inputs.get(name)
            if x is None:
                if name in present:
                    raise ValueError(f'modality {name!r} is marked present but has no input')
                continue
            x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            feeds[name] = np.ascontiguousarray(x[None] if x.ndim == 3 else x, np.float32)
        ref = feeds[present[0]].shape
        fixed = self.meta['shape']
        d = self.meta.get('size_divisor')
        if d and (len(ref) != 4 or any(s % d or s < 2 * d for s in ref[2:])):
            raise ValueError(f'input {present[0]!r} has shape {ref}: this dynamic-shape export '
                             f'takes heights and widths that are multiples of {d}, at least '
                             f'{2 * d}')
        for name, c in zip(names, self.meta['channels']):
            want = (1 if fixed else ref[0], c) + tuple(fixed or ref[2:])
            if name not in feeds:
                feeds[name] = np.zeros(want, np.float32)
            elif feeds[name].shape != want:
                why = ' (the file was exported for this size; export with --shape or ' \
                      '--dynamic-shape for others)' if fixed else ''
                raise ValueError(f'input {name!r}: expected shape {want} (B, C, H, W), got '
                                 f'{feeds[name].shape}{why}')
        feeds[self.meta['mask']] = np.array([n in present for n in names])
        return dict(zip(self._outputs, self.session.run(self._outputs, feeds)))

    # --- the segmentor interface ------------------------------------------------------------
    def _raw_batch(self, data: dict) -> torch.Tensor:
        """The raw (B, C, H, W) inputs for the graph under the preprocessor's setting."""
        pre = self.data_preprocessor
        processed = pre(data, False)  # its checks; RMM / NM draws
        if pre.missing_ratio == 1.0 and pre.noise_density == 0:
            return torch.stack([x.float().cpu() for x in data['inputs']])
        normed = processed['inputs'].cpu()
        raw = normed * pre.std.cpu() + pre.mean.cpu()  # a zeroed value -> the channel mean
        return raw[:, pre._bgr_order] if pre.bgr_to_rgb else raw

    def test_step(self, data: dict) -> List[SegDataSample]:
        """Predict a batch (one graph call per sample) under the preprocessor's protocol
        setting; see the class docs.

        Args:
            data (dict): ``inputs`` (list of (C, H, W) tensors) and ``data_samples``.

        Returns:
            list[SegDataSample]: With ``pred_sem_seg`` and, when exported, ``seg_logits``.
        """
        pre = self.data_preprocessor
        raw = self._raw_batch(data)
        partial = pre.missing_ratio < 1.0
        present = [n for n in self.modalities if partial or n not in pre.missing_modalities]
        samples = data.get('data_samples') or [SegDataSample() for _ in range(len(raw))]
        for x, sample in zip(raw, samples):
            outs = self.run({n: x[pre.spec.slices[n]] for n in self.modalities}, present)
            self._set_prediction(sample, outs, tuple(x.shape[1:]))
        return list(samples)

    val_step = test_step

    def _set_prediction(self, sample: SegDataSample, outs: Dict[str, np.ndarray],
                        size: tuple) -> None:
        labels = torch.from_numpy(outs['labels'])  # (1, H, W)
        logits = torch.from_numpy(outs['logits'][0]) if 'logits' in outs else None
        ori = tuple(sample.metainfo.get('ori_shape', size))
        if ori != size:
            if logits is None:
                raise ValueError(
                    f'the frame is predicted at {size} but its ori_shape is {ori} (the test '
                    'pipeline resizes it): export with --with-logits to resize the logits')
            logits = resize(logits[None], size=ori, mode='bilinear',
                            align_corners=self.meta['align_corners'], warning=False)[0]
            labels = (logits > self.meta['threshold']).long() if logits.shape[0] == 1 \
                else logits.argmax(0, keepdim=True)
        sample.set_data(dict(pred_sem_seg=PixelData(data=labels)))
        if logits is not None:
            sample.set_data(dict(seg_logits=PixelData(data=logits)))

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'predict'):
        """mmengine's entry point, for normalised (B, C, H, W) ``inputs`` (what the data
        preprocessor returns), turned back into raw values with every modality present.

        Raises:
            ValueError: ``mode`` 'loss': an exported model does not train.
        """
        if mode not in ('predict', 'tensor'):
            raise ValueError(f"ORTSegmentor runs inference only: mode 'predict' or 'tensor', "
                             f'got {mode!r}')
        pre = self.data_preprocessor
        raw = inputs.cpu() * pre.std.cpu() + pre.mean.cpu()
        raw = raw[:, pre._bgr_order] if pre.bgr_to_rgb else raw
        outs = [self.run({n: x[pre.spec.slices[n]] for n in self.modalities}) for x in raw]
        if mode == 'tensor':
            if 'logits' not in outs[0]:
                raise ValueError("mode 'tensor' needs a file exported with --with-logits")
            return torch.from_numpy(np.concatenate([o['logits'] for o in outs]))
        samples = data_samples or [SegDataSample() for _ in range(len(raw))]
        for x, sample, out in zip(raw, samples, outs):
            self._set_prediction(sample, out, tuple(x.shape[1:]))
        return list(samples)

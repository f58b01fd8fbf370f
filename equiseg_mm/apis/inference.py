"""Run a trained EQUISeg model on new multimodal frames, some of whose sensors may be dead.

The three functions mirror mmseg's ``init_model`` / ``inference_model`` / ``show_result_pyplot``:

    >>> model = init_multimodal_model('configs/equiseg/<config>.py', 'iter_1000.pth')
    >>> result = inference_multimodal(model, dict(rgb='f_rgb.png', lidar='f_lidar.png'))
    >>> save_prediction(model, result, 'out/f.png', rgb='f_rgb.png')

An absent modality goes through the missing-modality protocol of the test loop: a zero
placeholder is stacked in its place and the data preprocessor zeroes it after normalisation
(:meth:`MultiModalSegDataPreProcessor.protocol`, as the test loop runs its EMM passes), so a
prediction here equals the one the robustness test makes for the same subset of modalities.
"""
import copy
import os
import os.path as osp
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import mmcv
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmseg.apis import init_model
from mmseg.registry import DATASETS
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer

from ..datasets.transforms import LoadMultiModalImageFromFiles
from ..datasets.transforms.load_multi_modal_image_from_files import ModalitySource
from ..models import get_multimodal_preprocessor
from ..utils import unwrap_model
from ..utils.checkpoint import load_checkpoint

_LOADER = 'LoadMultiModalImageFromFiles'
#: The backends of :func:`init_multimodal_model`.
BACKENDS = ('pytorch', 'onnxruntime')


def _dataset_meta_from_config(cfg: Config, num_classes: Optional[int],
                              modalities: Sequence[str]) -> dict:
    """``classes``/``palette``/``modalities`` from the config's dataset, for a model without them.

    The dataset class's ``METAINFO`` updated with the dataset config's ``metainfo``; when the
    classes do not match the head's ``num_classes`` the classes are named by index, and a
    missing or mismatched palette is drawn from a fixed seed (as mmseg draws a random one).
    """
    meta: dict = {}
    for key in ('test_dataloader', 'val_dataloader', 'train_dataloader'):
        ds_cfg = (cfg.get(key) or {}).get('dataset')
        if not ds_cfg:
            continue
        ds_type = ds_cfg.get('type')
        ds_cls = DATASETS.get(ds_type) if isinstance(ds_type, str) else ds_type
        meta.update(copy.deepcopy(getattr(ds_cls, 'METAINFO', {}) or {}))
        meta.update(copy.deepcopy(ds_cfg.get('metainfo') or {}))
        break
    classes = list(meta.get('classes') or [])
    if num_classes is not None and len(classes) != num_classes:
        classes = [str(i) for i in range(num_classes)]
    palette = meta.get('palette')
    if not palette or len(palette) != len(classes):
        palette = np.random.RandomState(0).randint(0, 256, (len(classes), 3)).tolist()
    return dict(classes=tuple(classes), palette=[list(map(int, c)) for c in palette],
                modalities=tuple(modalities))


def resolve_backend(checkpoint: Optional[str], backend: Optional[str] = None) -> str:
    """'pytorch' or 'onnxruntime': ``backend`` checked, or (None) chosen by the checkpoint's
    extension (``.onnx`` -> 'onnxruntime').

    Raises:
        ValueError: An unknown backend, onnxruntime without a ``.onnx`` file, or a ``.onnx``
            file for PyTorch.
    """
    is_onnx = checkpoint is not None and str(checkpoint).lower().endswith('.onnx')
    if backend is None:
        return 'onnxruntime' if is_onnx else 'pytorch'
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    if backend == 'onnxruntime' and not is_onnx:
        raise ValueError(f"backend 'onnxruntime' runs a .onnx file (from "
                         f'tools/deployment/pytorch2onnx.py), got checkpoint {checkpoint!r}')
    if backend == 'pytorch' and is_onnx:
        raise ValueError(f"{checkpoint!r} is an ONNX file: use backend 'onnxruntime'")
    return backend


def init_multimodal_model(config: Union[str, Path, Config],
                          checkpoint: Optional[str] = None,
                          device: str = 'cpu',
                          cfg_options: Optional[dict] = None,
                          backend: Optional[str] = None) -> torch.nn.Module:
    """Build a multimodal segmentor from a config and optionally load a checkpoint.

    The model is built by mmseg's :func:`mmseg.apis.init_model` (pretrained weights switched
    off, ``train_cfg`` dropped, ``model.cfg`` kept, eval mode) and the checkpoint loaded with
    :func:`~equiseg_mm.utils.checkpoint.load_checkpoint` (``weights_only=True``, mmengine's types
    allowed). ``model.dataset_meta`` (``classes``, ``palette``, ``modalities``) comes from the
    checkpoint's ``meta['dataset_meta']`` when it has one, else from the config's dataset (not
    from mmseg's guess by class count, which would name Cityscapes classes here).

    With the ``onnxruntime`` backend the checkpoint is a file written by
    ``tools/deployment/pytorch2onnx.py``: the model is an
    :class:`~equiseg_mm.deploy.ORTSegmentor` (the config's data preprocessor and test pipeline,
    the graph in onnxruntime; no PyTorch model is built), whose ``dataset_meta`` is the one
    recorded at export (else the config's), and :func:`inference_multimodal` runs it as it runs
    a PyTorch model.

    Args:
        config (str | Path | Config): Config file or object (a Config is copied, not changed).
        checkpoint (str, optional): Checkpoint file, or a ``.onnx`` file. Defaults to None
            (random weights).
        device (str): Torch device, e.g. 'cpu' or 'cuda:0' (onnxruntime: its CPU or CUDA
            provider). Defaults to 'cpu'.
        cfg_options (dict, optional): Config overrides, as ``--cfg-options``. Defaults to None.
        backend (str, optional): 'pytorch' or 'onnxruntime'. Defaults to None (by the
            checkpoint's extension).

    Returns:
        torch.nn.Module: The segmentor in eval mode on ``device``, with ``cfg`` and
        ``dataset_meta``.

    Raises:
        FileNotFoundError: The config or checkpoint file does not exist.
        TypeError: ``config`` is neither a path nor a Config, or the model has no multimodal
            data preprocessor.
        ValueError: A backend that does not fit the checkpoint (see :func:`resolve_backend`).
    """
    if isinstance(config, (str, Path)):
        if not osp.isfile(config):
            raise FileNotFoundError(f'config file {str(config)!r} does not exist')
        cfg = Config.fromfile(str(config))
    elif isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        raise TypeError(f'config must be a file path or a Config, got {type(config).__name__}')
    if checkpoint is not None and '://' not in str(checkpoint) and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint file {str(checkpoint)!r} does not exist')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    if resolve_backend(checkpoint, backend) == 'onnxruntime':
        return _init_onnxruntime_model(cfg, str(checkpoint), device, cfg_options)
    model = init_model(cfg, None, device=device, cfg_options=cfg_options)
    pre = get_multimodal_preprocessor(model, 'init_multimodal_model')
    meta = None
    if checkpoint is not None:
        loaded = load_checkpoint(model, str(checkpoint), map_location='cpu')
        meta = (loaded.get('meta') or {}).get('dataset_meta') if isinstance(loaded, dict) \
            else None
    if not meta:
        head = getattr(model, 'decode_head', None)
        meta = _dataset_meta_from_config(model.cfg, getattr(head, 'num_classes', None),
                                         pre.modalities)
    model.dataset_meta = dict(meta)
    model.to(device)
    model.eval()
    return model


def _init_onnxruntime_model(cfg: Config, onnx_file: str, device: str,
                            cfg_options: Optional[dict]) -> torch.nn.Module:
    """:func:`init_multimodal_model` for a ``.onnx`` file."""
    from ..deploy import ORTSegmentor
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    model = ORTSegmentor(onnx_file, cfg.model.data_preprocessor, device=device)
    model.cfg = cfg
    meta = dict(model.meta.get('dataset_meta') or _dataset_meta_from_config(
        cfg, model.meta['num_classes'], model.modalities))
    for key in ('classes', 'modalities'):  # tuples, as in a checkpoint (JSON has lists)
        if isinstance(meta.get(key), list):
            meta[key] = tuple(meta[key])
    model.dataset_meta = meta
    return model.eval()


def _test_pipeline(model: torch.nn.Module) -> List[dict]:
    """The config's test pipeline (the test dataset's, else ``test_pipeline``)."""
    cfg = getattr(unwrap_model(model), 'cfg', None)
    if cfg is None:
        return [dict(type=_LOADER), dict(type='PackSegInputs')]
    for key in ('test_dataloader', 'val_dataloader'):
        pipeline = ((cfg.get(key) or {}).get('dataset') or {}).get('pipeline')
        if pipeline:
            return copy.deepcopy(list(pipeline))
    if cfg.get('test_pipeline'):
        return copy.deepcopy(list(cfg.test_pipeline))
    return [dict(type=_LOADER), dict(type='PackSegInputs')]


def _type_name(transform: dict) -> str:
    t = transform.get('type', '')
    return (t if isinstance(t, str) else getattr(t, '__name__', '')).split('.')[-1]


def _split_pipeline(model: torch.nn.Module, channels: Dict[str, int]):
    """The loader (with the model's channels) and the rest of the test pipeline.

    Annotation loading (``Load...Annotations``, e.g. ``LoadMultiModalAnnotations``) is dropped:
    new frames have no labels.
    """
    pipeline = _test_pipeline(model)
    loaders = [t for t in pipeline if _type_name(t) == _LOADER]
    if not loaders:
        raise ValueError(f'the test pipeline of the config has no {_LOADER} (transforms: '
                         f'{[_type_name(t) for t in pipeline]}); inference_multimodal takes '
                         f'its reading options (npz_key, to_float32, backend_args) from it')
    kwargs = {k: v for k, v in loaders[0].items() if k not in ('type', 'channels')}
    loader = LoadMultiModalImageFromFiles(channels=channels, **kwargs)
    rest = [t for t in pipeline if _type_name(t) != _LOADER and not (
        _type_name(t).startswith('Load') and _type_name(t).endswith('Annotations'))]
    return loader, Compose(rest)


def _load_inputs(loader: LoadMultiModalImageFromFiles, inputs: Mapping[str, ModalitySource],
                 modalities: List[str]) -> dict:
    """Read, fit and stack the present modalities; zero placeholders for the absent ones.

    The first present modality in the model's order (RGB when it is given) sets the size, as in
    the dataset path: a smaller modality with the same aspect ratio is resized to it (logged as a
    warning), a larger one is an error.
    """
    sources = {name: inputs.get(name) for name in modalities}
    img, channels = loader.load_modalities(sources, size_from='first', notify_resize=True)
    paths = {name: os.fspath(src) for name, src in sources.items()
             if isinstance(src, (str, os.PathLike))}
    results = dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2],
                   modalities=list(modalities), modality_channels=channels,
                   modality_paths=paths)
    if paths:
        results['img_path'] = next(iter(paths.values()))
    return results


def inference_multimodal(model: torch.nn.Module,
                         modality_files: Mapping[str, ModalitySource]) -> SegDataSample:
    """Segment one multimodal frame in which any modality may be absent.

    Present modalities are read and fitted by
    :meth:`LoadMultiModalImageFromFiles.load_modalities`, with the rules of the dataset pipeline
    (a 1-channel image is repeated to the model's channel count, a 4-channel one keeps its first
    3, a smaller modality with the same aspect ratio is resized with nearest neighbour, float
    data must be finite); the first present modality in the model's order (RGB when given, as
    in the dataset path) sets the size, every resize is logged as a warning, and a modality
    larger than that one is an error. Each absent
    modality gets a zero placeholder and is zeroed by the data preprocessor after normalisation
    under ``protocol(missing=absent, ratio=1.0)`` (EMM, as the missing-modality test does; the
    noise density stays as configured). The rest of the test pipeline runs without annotation
    loading.

    Args:
        model (torch.nn.Module): From :func:`init_multimodal_model`.
        modality_files (Mapping[str, str | PathLike | np.ndarray | None]): Modality name ->
            image/``.npy``/``.npz`` file, or an already loaded (H, W) / (H, W, C) array. Colour
            arrays are taken in BGR order, as ``mmcv.imread``/``cv2.imread`` return them and as
            the files are read. A missing key or None means the sensor is absent.

    Returns:
        SegDataSample: ``pred_sem_seg`` (1, H, W) and ``seg_logits`` at the size of the first
        present modality; the metainfo also holds ``present_modalities`` and
        ``missing_modalities`` (tuples of names).

    Raises:
        ValueError: An unknown modality name (the message lists the model's), no modality at
            all, a modality whose channels or size cannot be fitted (names it, the expected
            and the got shape), or one with NaN/Inf values (names it and counts them).
        FileNotFoundError: A modality file does not exist (names the modality and the path).
        TypeError: A modality is neither a path, an array nor None.
    """
    pre = get_multimodal_preprocessor(model, 'inference_multimodal')
    modalities = list(pre.spec.names)
    pre.spec.select(list(modality_files))  # names an unknown modality
    loader, rest = _split_pipeline(model, dict(zip(pre.spec.names, pre.spec.channels)))
    results = _load_inputs(loader, modality_files, modalities)
    packed = rest(results)
    present = tuple(n for n in modalities if modality_files.get(n) is not None)
    absent = tuple(n for n in modalities if n not in present)
    data = dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']])
    with pre.protocol(missing=absent, ratio=1.0), torch.no_grad():
        result = model.test_step(data)[0]
    result.set_metainfo(dict(present_modalities=present, missing_modalities=absent))
    return result


def _read_rgb(rgb: Union[str, os.PathLike, np.ndarray], hw: tuple) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image of size ``hw`` from a file or a BGR/grey array."""
    if isinstance(rgb, (str, os.PathLike)):
        path = os.fspath(rgb)
        if not osp.isfile(path):
            raise FileNotFoundError(f'the rgb image {path} does not exist')
        image = mmcv.imread(path, flag='color', channel_order='rgb')
    else:
        image = np.asarray(rgb)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f'rgb: expected an (H, W, 3) BGR or (H, W) grey array, got shape '
                             f'{tuple(image.shape)}')
        image = mmcv.bgr2rgb(np.ascontiguousarray(image[..., :3]))
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.shape[:2] != tuple(hw):
        image = mmcv.imresize(image, (hw[1], hw[0]), interpolation='bilinear')
    return image


def save_prediction(model: torch.nn.Module,
                    result: SegDataSample,
                    out_path: str,
                    rgb: Union[None, str, os.PathLike, np.ndarray] = None,
                    opacity: float = 0.5,
                    with_labels: bool = False) -> Dict[str, str]:
    """Write the predicted label map and a coloured overlay.

    ``out_path`` gets the label map (a 1-channel PNG of class indices; 16-bit when there are
    more than 256 classes); ``<out_path stem>_overlay.png`` the palette of
    ``model.dataset_meta`` drawn by mmseg's :class:`SegLocalVisualizer`, blended with
    ``opacity`` on ``rgb`` when given, else the palette image alone.

    Args:
        model (torch.nn.Module): The segmentor; its ``dataset_meta`` gives classes and palette.
        result (SegDataSample): From :func:`inference_multimodal` (needs ``pred_sem_seg``).
        out_path (str): Path of the label PNG; folders are created.
        rgb (str | PathLike | np.ndarray, optional): Image to draw on: a file, or an array in
            BGR order (as :func:`inference_multimodal` takes it); resized to the prediction if
            needed. Defaults to None.
        opacity (float): Weight of the palette colours, in (0, 1]. Defaults to 0.5.
        with_labels (bool): Write class names on the overlay. Defaults to False.

    Returns:
        dict[str, str]: ``{'label': path, 'overlay': path}``.
    """
    if not str(out_path).lower().endswith('.png'):
        raise ValueError(f'out_path must name a .png file (label maps must be lossless), got '
                         f'{str(out_path)!r}')
    if not 0.0 < float(opacity) <= 1.0:
        raise ValueError(f'opacity must be in (0, 1], got {opacity!r}')
    if 'pred_sem_seg' not in result:
        raise ValueError('result has no pred_sem_seg; pass the output of inference_multimodal')
    meta = getattr(unwrap_model(model), 'dataset_meta', None) or {}
    if not meta.get('classes') or not meta.get('palette'):
        raise ValueError('model.dataset_meta has no classes/palette; build the model with '
                         'init_multimodal_model')
    label = result.pred_sem_seg.data.detach().cpu().numpy()[0]
    label = label.astype(np.uint8 if len(meta['classes']) <= 256 else np.uint16)
    out_path = os.fspath(out_path)
    overlay_path = osp.splitext(out_path)[0] + '_overlay.png'
    mmcv.imwrite(label, out_path)

    if rgb is None:
        image, alpha = np.zeros(label.shape + (3, ), np.uint8), 1.0
    else:
        image, alpha = _read_rgb(rgb, label.shape), float(opacity)
    # constructed directly, not by get_instance: it stays out of mmengine's instance registry
    visualizer = SegLocalVisualizer(name='equiseg_mm_save_prediction', alpha=alpha)
    visualizer.dataset_meta = dict(classes=meta['classes'], palette=meta['palette'])
    visualizer.add_datasample('prediction', image, result, draw_gt=False, draw_pred=True,
                              with_labels=with_labels, out_file=overlay_path)
    return dict(label=out_path, overlay=overlay_path)

"""Panels of every input modality (3 channels in colour, others in grey, non-8-bit min-max scaled),
the ground truth and the predictions with all modalities and with each one missing."""
import copy
import os
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import mmcv
import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer

from ..models import get_multimodal_preprocessor
from ..utils import ModalitySpec, unwrap_model

__all__ = ['draw_modality_panel', 'predict_modality_variants', 'visualize_modalities']

LabelLike = Union[np.ndarray, torch.Tensor, PixelData]

_BAR = 22  # title bar height, pixels
_GAP = 4  # white gap between tiles, pixels


def _label_array(label: LabelLike) -> np.ndarray:
    """An (H, W) int64 array from an (H, W) / (1, H, W) array, tensor or PixelData."""
    if isinstance(label, PixelData):
        label = label.data
    if isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    label = np.asarray(label)
    if label.ndim == 3 and label.shape[0] == 1:
        label = label[0]
    if label.ndim != 2:
        raise ValueError(f'a label map must be (H, W) or (1, H, W), got shape {label.shape}')
    return label.astype(np.int64)


def _modality_image(values: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 RGB picture of one modality's (C, H, W) raw values."""
    if values.dtype != np.uint8:
        values = values.astype(np.float32)
        lo, hi = float(values.min()), float(values.max())
        values = ((values - lo) / (hi - lo) * 255 if hi > lo else values * 0).astype(np.uint8)
    if values.shape[0] == 3:  # read by cv2: BGR
        return np.ascontiguousarray(values[::-1].transpose(1, 2, 0))
    return np.repeat(values[0][..., None], 3, axis=2)  # grey (first channel)


def _fit(image: np.ndarray, hw: Tuple[int, int], nearest: bool) -> np.ndarray:
    if image.shape[:2] == tuple(hw):
        return image
    return mmcv.imresize(image, (hw[1], hw[0]), interpolation='nearest' if nearest else 'area')


def _titled(tile: np.ndarray, title: str) -> np.ndarray:
    """The tile under a white bar with ``title`` (shrunk to fit the tile width)."""
    width = tile.shape[1]
    bar = np.full((_BAR, width, 3), 255, np.uint8)
    scale = 0.45
    while scale > 0.2 and cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] \
            > width - 6:
        scale -= 0.05
    cv2.putText(bar, title, (3, _BAR - 7), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                cv2.LINE_AA)
    return np.concatenate([bar, tile], axis=0)


def _legend(classes: Sequence[str], palette: Sequence[Sequence[int]], present: Sequence[int],
            width: int) -> np.ndarray:
    """A white block of swatches and names of the classes in ``present``, ``width`` wide."""
    font, scale, swatch, pad = cv2.FONT_HERSHEY_SIMPLEX, 0.42, 12, 6
    items, line, x = [], [], pad
    for idx in present:
        name = str(classes[idx])
        item_w = swatch + 4 + cv2.getTextSize(name, font, scale, 1)[0][0] + 2 * pad
        if line and x + item_w > width:
            items.append(line)
            line, x = [], pad
        line.append((x, idx, name))
        x += item_w
    if line:
        items.append(line)
    row_h = swatch + 2 * pad
    block = np.full((max(1, len(items)) * row_h + pad, width, 3), 255, np.uint8)
    for r, line in enumerate(items):
        y = pad + r * row_h
        for x, idx, name in line:
            block[y:y + swatch, x:x + swatch] = palette[idx]
            cv2.rectangle(block, (x, y), (x + swatch - 1, y + swatch - 1), (0, 0, 0), 1)
            cv2.putText(block, name, (x + swatch + 4, y + swatch - 2), font, scale, (0, 0, 0), 1,
                        cv2.LINE_AA)
    return block


def draw_modality_panel(inputs: Union[np.ndarray, torch.Tensor],
                        modalities: Sequence[str],
                        channels: Sequence[int],
                        predictions: Mapping[Tuple[str, ...], LabelLike],
                        dataset_meta: dict,
                        gt: Optional[LabelLike] = None,
                        header: Optional[str] = None,
                        rgb_modality: str = 'rgb',
                        opacity: float = 1.0,
                        tile_width: Tuple[int, int] = (224, 512),
                        legend: bool = True) -> Tuple[np.ndarray, dict]:
    """Draw the panel of one sample: the modalities and the ground truth, then the predictions.

    Args:
        inputs (np.ndarray | torch.Tensor): (sum(C), H, W) raw stacked modalities, colour in BGR.
        modalities (Sequence[str]): Modality names in stacking order.
        channels (Sequence[int]): Channels per modality.
        predictions (Mapping[tuple[str, ...], label]): Missing modalities -> label map.
        dataset_meta (dict): ``classes`` and ``palette``.
        gt (label, optional): Ground-truth label map (ignored values stay black). Defaults to None.
        header (str, optional): A line above the grid (e.g. the file name). Defaults to None.
        rgb_modality (str): Modality the labels are blended on. Defaults to 'rgb'.
        opacity (float): Weight of the palette colours in (0, 1]. Defaults to 1.0.
        tile_width (tuple[int, int]): Smallest and largest tile width. Defaults to (224, 512).
        legend (bool): Draw a legend of the classes present. Defaults to True.

    Returns:
        tuple[np.ndarray, dict]: The (H, W, 3) uint8 RGB panel and its layout: ``rows`` (titles,
        None for an empty cell), ``tile_hw``, ``bar``, ``gap``, ``header``, ``legend`` heights.
    """
    spec = ModalitySpec(modalities, channels)
    if not 0.0 < float(opacity) <= 1.0:
        raise ValueError(f'opacity must be in (0, 1], got {opacity!r}')
    if not dataset_meta.get('classes') or not dataset_meta.get('palette'):
        raise ValueError('dataset_meta needs classes and palette')
    values = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) \
        else np.asarray(inputs)
    if values.ndim != 3 or values.shape[0] != spec.total:
        raise ValueError(f'inputs must be (sum(C)={spec.total}, H, W) for modalities '
                         f'{list(spec.names)} with channels {list(spec.channels)}, got shape '
                         f'{values.shape}')
    h, w = values.shape[1:]
    width = int(min(max(w, tile_width[0]), tile_width[1]))
    hw = (max(1, round(h * width / w)), width)

    pictures = {name: _modality_image(values[sl]) for name, sl in spec.slices.items()}
    base = pictures.get(rgb_modality)

    # constructed directly, not by get_instance: it stays out of mmengine's instance registry
    visualizer = SegLocalVisualizer(name='equiseg_mm_modality_panel', alpha=float(opacity))
    visualizer.dataset_meta = dict(classes=dataset_meta['classes'],
                                   palette=dataset_meta['palette'])

    def paint(label: LabelLike) -> np.ndarray:
        label = _label_array(label)
        under = np.zeros(label.shape + (3, ), np.uint8) if base is None else \
            _fit(base, label.shape, nearest=False)
        sample = SegDataSample(pred_sem_seg=PixelData(data=torch.from_numpy(label[None])))
        visualizer.add_datasample('label', under, sample, draw_gt=False, draw_pred=True,
                                  with_labels=False)
        return _fit(visualizer.get_image(), hw, nearest=True)

    row1 = [(name, _fit(picture, hw, nearest=False)) for name, picture in pictures.items()]
    if gt is not None:
        row1.append(('ground truth', paint(gt)))
    row2 = [('pred: no ' + '+'.join(missing) if missing else 'pred: all', paint(label))
            for missing, label in predictions.items()]
    rows = [r for r in (row1, row2) if r]
    cols = max(len(r) for r in rows)

    cell_h, cell_w = hw[0] + _BAR, hw[1]
    grid_w = cols * cell_w + (cols - 1) * _GAP
    blocks = []
    if header:
        blocks.append(_titled(np.full((0, grid_w, 3), 255, np.uint8), header))
    for r, row in enumerate(rows):
        line = np.full((cell_h, grid_w, 3), 255, np.uint8)
        for c, (title, tile) in enumerate(row):
            x = c * (cell_w + _GAP)
            line[:, x:x + cell_w] = _titled(tile, title)
        if r:
            blocks.append(np.full((_GAP, grid_w, 3), 255, np.uint8))
        blocks.append(line)
    labels = ([gt] if gt is not None else []) + list(predictions.values())
    present = sorted({int(v) for label in labels for v in np.unique(_label_array(label))
                      if 0 <= int(v) < len(dataset_meta['classes'])})
    legend_h = 0
    if legend and present:
        legend_block = _legend(dataset_meta['classes'], dataset_meta['palette'], present, grid_w)
        legend_h = legend_block.shape[0]
        blocks.append(legend_block)
    panel = np.concatenate(blocks, axis=0)
    layout = dict(rows=[[t for t, _ in row] + [None] * (cols - len(row)) for row in rows],
                  tile_hw=hw, bar=_BAR, gap=_GAP, header=_BAR if header else 0,
                  legend=legend_h)
    return panel, layout


def predict_modality_variants(model: torch.nn.Module, data_batch: dict,
                              variants: Optional[Sequence[Sequence[str]]] = None
                              ) -> Dict[Tuple[str, ...], List[SegDataSample]]:
    """Predict a batch under the data preprocessor's ``protocol(missing=variant, ratio=1.0)``.

    Args:
        model (torch.nn.Module): A multimodal segmentor (or a wrapper of one).
        data_batch (dict): ``inputs`` and ``data_samples``, as a dataloader gives them.
        variants (Sequence[Sequence[str]], optional): Missing-modality sets to run. Defaults to
            None: ``()`` then each single modality (only ``()`` for a one-modality model).

    Returns:
        dict[tuple[str, ...], list[SegDataSample]]: Missing modalities -> predictions.
    """
    model = unwrap_model(model)
    pre = get_multimodal_preprocessor(model, 'predict_modality_variants')
    names = pre.spec.names
    if variants is None:
        variants = [()] + ([(m, ) for m in names] if len(names) > 1 else [])
    out = {}
    for missing in variants:
        batch = dict(data_batch, data_samples=copy.deepcopy(data_batch['data_samples']))
        with pre.protocol(missing=tuple(missing), ratio=1.0), torch.no_grad():
            out[tuple(missing)] = model.test_step(batch)
    return out


def visualize_modalities(model: torch.nn.Module,
                         dataset,
                         out_dir: str,
                         num_samples: int = 4,
                         indices: Optional[Sequence[int]] = None,
                         opacity: float = 1.0,
                         prefix: str = '',
                         tile_width: Tuple[int, int] = (224, 512)) -> List[str]:
    """Write one panel PNG (see :func:`draw_modality_panel`) per dataset sample.

    Args:
        model (torch.nn.Module): A multimodal segmentor (or a wrapper); its mode is restored.
        dataset: A dataset giving ``inputs`` and ``data_samples``; its ``metainfo`` (else
            ``model.dataset_meta``) gives classes and palette.
        out_dir (str): Output folder (created).
        num_samples (int): How many samples, from the first. Defaults to 4.
        indices (Sequence[int], optional): Sample indices to draw instead. Defaults to None.
        opacity (float): See :func:`draw_modality_panel`. Defaults to 1.0.
        prefix (str): File name prefix. Defaults to ''.
        tile_width (tuple[int, int]): Smallest and largest tile width. Defaults to (224, 512).

    Returns:
        list[str]: The written files, ``<out_dir>/<prefix><index:04d>_<file stem>.png``.
    """
    if indices is None:
        if int(num_samples) < 1:
            raise ValueError(f'num_samples must be at least 1, got {num_samples!r}')
        indices = range(min(int(num_samples), len(dataset)))
    bad = [i for i in indices if not 0 <= int(i) < len(dataset)]
    if bad:
        raise ValueError(f'sample indices {bad} are out of range for a dataset of '
                         f'{len(dataset)} samples')
    core = unwrap_model(model)
    pre = get_multimodal_preprocessor(core, 'visualize_modalities')
    meta = dict(getattr(dataset, 'metainfo', None) or {})
    if not meta.get('classes') or not meta.get('palette'):
        meta = dict(getattr(core, 'dataset_meta', None) or {})
    os.makedirs(out_dir, exist_ok=True)
    was_training = core.training
    core.eval()
    written = []
    try:
        for idx in indices:
            data = dataset[int(idx)]
            predictions = predict_modality_variants(core, pseudo_collate([data]))
            sample = data['data_samples']
            path = sample.metainfo.get('img_path') or f'sample{int(idx)}'
            stem = osp.splitext(osp.basename(path))[0]
            tags = [f'{k}={sample.metainfo[k]}' for k in ('condition', 'case')
                    if k in sample.metainfo]
            panel, _ = draw_modality_panel(
                data['inputs'], pre.spec.names, pre.spec.channels,
                {k: v[0].pred_sem_seg for k, v in predictions.items()}, meta,
                gt=sample.gt_sem_seg if 'gt_sem_seg' in sample else None,
                header=' '.join([stem] + tags), rgb_modality=pre.rgb_modality,
                opacity=opacity, tile_width=tile_width)
            out = osp.join(out_dir, f'{prefix}{int(idx):04d}_{stem}.png')
            mmcv.imwrite(mmcv.rgb2bgr(panel), out)
            written.append(out)
    finally:
        core.train(was_training)
    return written

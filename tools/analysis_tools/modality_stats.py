"""Per-modality mean and std over a split, in the form the data preprocessor takes.

    python tools/analysis_tools/modality_stats.py CONFIG [--split train] [--num-samples N]
        [--cfg-options train_dataloader.dataset.data_root=...]

Each sample is read with the dataset's loading transform only (no resize, crop or photometric
change), the 3-channel modalities the preprocessor flips are flipped the same way
(``bgr_to_rgb``), and the mean and std of every channel are taken over every pixel of the
samples read. The printed ``mean=dict(...), std=dict(...)`` goes into
``model.data_preprocessor``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/
import _common  # noqa: E402,F401,I001  (first: EQUISEG_COMPAT=all, quiet stack warnings)
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import equiseg_mm  # noqa: E402,F401  (registration)
from mmseg.registry import DATASETS, MODELS  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Per-modality mean and std over a split.')
    parser.add_argument('config', help='config file')
    parser.add_argument('--split', default='train', choices=('train', 'val', 'test'))
    parser.add_argument('--num-samples', type=int, default=None,
                        help='read only the first N samples (default: all)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='override config settings, e.g. the dataset data_root')
    args = parser.parse_args(argv)
    if not os.path.isfile(args.config):
        parser.error(f'config file {args.config!r} does not exist')
    if args.num_samples is not None and args.num_samples < 1:
        parser.error('--num-samples must be >= 1')
    return args


def modality_stats(cfg: Config, split: str = 'train', num_samples=None) -> dict:
    """``{'mean': {modality: [...]}, 'std': {...}, 'num_samples': n}`` of a config's split."""
    init_default_scope('mmseg')
    dataset_cfg = cfg[f'{split}_dataloader'].dataset
    loading = [t for t in dataset_cfg.pipeline if t['type'] == 'LoadMultiModalImageFromFiles']
    if not loading:
        raise ValueError(f'the {split} pipeline has no LoadMultiModalImageFromFiles')
    dataset = DATASETS.build(dict(dataset_cfg, pipeline=loading[:1]))
    pre = MODELS.build(cfg.model.data_preprocessor)
    order = pre._bgr_order if pre.bgr_to_rgb and pre.bgr_modalities else None
    count = len(dataset) if num_samples is None else min(num_samples, len(dataset))
    total = total_sq = None
    pixels = 0
    for i in range(count):
        img = torch.from_numpy(dataset[i]['img']).double().permute(2, 0, 1)  # (C, H, W)
        if order is not None:
            img = img[order]
        flat = img.flatten(1)
        total = flat.sum(1) if total is None else total + flat.sum(1)
        total_sq = flat.square().sum(1) if total_sq is None else total_sq + flat.square().sum(1)
        pixels += flat.shape[1]
    mean = total / pixels
    std = (total_sq / pixels - mean.square()).clamp(min=0).sqrt()
    out = dict(mean={}, std={}, num_samples=count)
    for name, sl in pre.spec.slices.items():
        out['mean'][name] = [round(float(v), 3) for v in mean[sl]]
        out['std'][name] = [round(max(float(v), 1e-3), 3) for v in std[sl]]
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    stats = modality_stats(cfg, args.split, args.num_samples)
    print(f'# {args.split} split, {stats["num_samples"]} samples, every pixel')
    print(f'mean=dict({", ".join(f"{k}={v}" for k, v in stats["mean"].items())}),')
    print(f'std=dict({", ".join(f"{k}={v}" for k, v in stats["std"].items())}),')
    return stats


if __name__ == '__main__':
    main()

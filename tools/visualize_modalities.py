"""Draw one panel per sample: each input modality, the ground truth, the prediction with all
modalities and with each single modality missing.

    python tools/visualize_modalities.py CONFIG CHECKPOINT [--num-samples 4] [--out-dir DIR]
        [--split test|val] [--indices 0 5 9] [--data-root DIR] [--device cpu] [--opacity 1.0]
        [--cfg-options k=v ...]

Writes DIR/<index>_<stem>.png for the first samples (or --indices) of the config's test (or
val) dataset. The same drawing runs after a test in a config with
``custom_hooks=[dict(type='MultiModalVisualizationHook', num_samples=4)]``.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import _common  # noqa: F401  (EQUISEG_COMPAT=all, quiet stack warnings)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Per-modality prediction panels')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--num-samples', type=int, default=4,
                        help='panels to draw, from the first sample')
    parser.add_argument('--indices', type=int, nargs='+', help='sample indices instead')
    parser.add_argument('--out-dir', default='work_dirs/vis_modalities', help='output folder')
    parser.add_argument('--split', choices=['test', 'val'], default='test',
                        help='which dataloader of the config to read')
    parser.add_argument('--data-root', help="override the dataset's data_root")
    parser.add_argument('--device', default='cpu', help="torch device, e.g. 'cpu', 'cuda:0'")
    parser.add_argument('--opacity', type=float, default=1.0,
                        help='palette weight of the label tiles, in (0, 1]')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    for what, path in (('config', args.config), ('checkpoint', args.checkpoint)):
        if not osp.isfile(path):
            print(f'error: {what} file {path} does not exist', file=sys.stderr)
            return 1
    import equiseg_mm  # noqa: F401  (registration)
    from mmseg.registry import DATASETS

    from equiseg_mm.apis import init_multimodal_model
    from equiseg_mm.visualization import visualize_modalities
    options = dict(args.cfg_options or {})
    if args.data_root:
        options[f'{args.split}_dataloader.dataset.data_root'] = args.data_root
    try:
        model = init_multimodal_model(args.config, args.checkpoint, device=args.device,
                                      cfg_options=options or None)
        dataset = DATASETS.build(model.cfg[f'{args.split}_dataloader']['dataset'])
        written = visualize_modalities(model, dataset, args.out_dir,
                                       num_samples=args.num_samples, indices=args.indices,
                                       opacity=args.opacity)
    except (ValueError, FileNotFoundError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'{len(written)} panels in {args.out_dir}')
    for path in written:
        print(f'  {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Parameters and FLOPs of a config's model at inference (tensor mode), part by part.

    python tools/analysis_tools/get_flops.py CONFIG [--shape H W] [--modalities rgb depth ...]
        [--cfg-options model.neck.aux_summary=per_primary ...]

What is counted and how: see ``tools/_complexity.py`` (one multiply-add = one FLOP;
scaled-dot-product attention and average pooling counted by added handles; element-wise ops not
counted).
"""
import argparse
import os
import sys
from typing import Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/
import _common  # noqa: E402,F401,I001  (first: EQUISEG_COMPAT=all, quiet stack warnings)
from mmengine.config import DictAction  # noqa: E402

import equiseg_mm  # noqa: E402,F401  (registration before mmseg.models)
from _complexity import (build_segmentor, complexity,  # noqa: E402
                                         format_report, load_model_cfg)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Parameters and FLOPs (1 multiply-add = 1 FLOP) of a config\'s model at '
        'inference, per part (backbone branches, neck stages, decode head).')
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', default=[1024, 1024], metavar='N',
                        help='input size: H W, or one number for a square. Default 1024 1024')
    parser.add_argument('--modalities', nargs='+', default=None,
                        help='modalities to run with instead of the config\'s')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                        help='override config settings, e.g. model.neck.aux_summary=per_primary')
    args = parser.parse_args(argv)
    if not os.path.isfile(args.config):
        parser.error(f'config file {args.config!r} does not exist')
    if len(args.shape) == 1:
        args.shape = args.shape * 2
    if len(args.shape) != 2 or min(args.shape) < 32:
        parser.error(f'--shape takes H W (each >= 32), got {args.shape}')
    return args


def main(argv=None) -> Dict:
    args = parse_args(argv)
    segmentor = build_segmentor(load_model_cfg(args.config, args.modalities, args.cfg_options))
    info = complexity(segmentor, args.shape)
    print(format_report(args.config, info))
    return info


if __name__ == '__main__':
    main()

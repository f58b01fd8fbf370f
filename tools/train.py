"""Train a segmentor from a config (mmseg's argument surface).

    python tools/train.py configs/equiseg/<config>.py [--work-dir DIR] [--resume] [--amp]
        [--cfg-options k=v ...] [--launcher pytorch]
"""
import argparse
import os
import os.path as osp
import sys

import _common  # noqa: F401,I001  (first: EQUISEG_COMPAT=all, quiet stack warnings)
import equiseg_mm  # noqa: F401  (registers the plugin; configs also import it)
from _runner import check_amp_device, common_arguments, prepare_config, runner_from_config


def parse_args():
    parser = argparse.ArgumentParser(description='Train a segmentor (equiseg-mm)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--resume', action='store_true',
                        help='resume from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    common_arguments(parser)
    args = parser.parse_args()
    if not osp.isfile(args.config):
        parser.error(f'config file {args.config!r} does not exist')
    os.environ['LOCAL_RANK'] = os.environ.get('LOCAL_RANK', str(args.local_rank))
    return args


def main():
    args = parse_args()
    cfg = prepare_config(args.config, args.work_dir, args.cfg_options, args.launcher,
                         amp=args.amp, resume=args.resume)
    try:
        check_amp_device(cfg)
    except ValueError as exc:
        sys.exit(f'error: {exc}')
    runner_from_config(cfg).train()


if __name__ == '__main__':
    main()

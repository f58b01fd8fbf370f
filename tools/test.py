"""Test a checkpoint (mmseg's argument surface). With an equiseg config this also runs the
missing-modality robustness evaluation and writes the report to the work dir.

    python tools/test.py configs/equiseg/<config>.py <checkpoint> [--work-dir DIR]
        [--cfg-options k=v ...] [--out DIR] [--show-dir DIR] [--launcher pytorch]
"""
import argparse
import os
import os.path as osp

import _common  # noqa: F401,I001  (first: EQUISEG_COMPAT=all, quiet stack warnings)
import equiseg_mm  # noqa: F401  (registers the plugin; configs also import it)
from _runner import common_arguments, prepare_config, runner_from_config


def parse_args():
    parser = argparse.ArgumentParser(description='Test a segmentor (equiseg-mm)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='directory to save the predicted label maps')
    parser.add_argument('--show-dir', help='directory to save painted predictions')
    common_arguments(parser)
    args = parser.parse_args()
    if not osp.isfile(args.config):
        parser.error(f'config file {args.config!r} does not exist')
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint file {args.checkpoint!r} does not exist')
    os.environ['LOCAL_RANK'] = os.environ.get('LOCAL_RANK', str(args.local_rank))
    return args


def main():
    args = parse_args()
    cfg = prepare_config(args.config, args.work_dir, args.cfg_options, args.launcher)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        vis = cfg.default_hooks.setdefault('visualization', dict(type='SegVisualizationHook'))
        vis.update(draw=True, interval=1)
        cfg.visualizer['save_dir'] = args.show_dir
    if args.out:
        # mmseg's IoUMetric writes the predicted label maps; the balance metric keeps only
        # histograms, so it runs beside it.
        evaluators = cfg.test_evaluator
        evaluators = [evaluators] if isinstance(evaluators, dict) else list(evaluators)
        evaluators.append(dict(type='IoUMetric', iou_metrics=['mIoU'], output_dir=args.out))
        cfg.test_evaluator = evaluators
    runner_from_config(cfg).test()


if __name__ == '__main__':
    main()

"""Write the seeded synthetic DeLiVER-layout dataset and print what was written.

Example::

    python tools/make_synthetic_dataset.py --out data/synthetic_deliver --seed 0
    # the second task: RGB separates every pair by day, the other sensors add night/fog robustness
    python tools/make_synthetic_dataset.py --scene street --out data/synthetic_street
"""
import argparse
import time

import _common  # noqa: F401,I001  (first: EQUISEG_COMPAT=all, quiet stack warnings)
import equiseg_mm  # noqa: F401  (registration before any mmseg import)
from _synthetic_deliver import SCENES, make_synthetic_deliver


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write a small synthetic multimodal dataset in the DeLiVER layout: with '
        '--scene complementary each of four class pairs is told apart by one modality only; '
        'with --scene street RGB tells every pair apart by day and depth, lidar and events '
        'repeat one pair\'s cue each, robust to night and fog.')
    parser.add_argument('--scene', default='complementary', choices=sorted(SCENES),
                        help='scene preset (default: complementary, the main job\'s data)')
    parser.add_argument('--out', default=None,
                        help='output folder (default: data/synthetic_deliver for the '
                        'complementary scene, data/synthetic_street for the street scene)')
    parser.add_argument('--seed', type=int, default=0, help='seed of every random draw')
    parser.add_argument('--num-train', type=int, default=160, help='training samples')
    parser.add_argument('--num-val', type=int, default=48, help='validation samples')
    parser.add_argument('--num-test', type=int, default=48, help='test samples')
    parser.add_argument('--size', type=int, nargs=2, default=(96, 128), metavar=('H', 'W'),
                        help='frame height and width')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a non-empty output folder that holds something else')
    return parser.parse_args(argv)


def format_summary(summary: dict, seconds: float) -> str:
    """The counts per split, condition and case, the classes and the pairs, as text."""
    lines = [f'wrote {summary["root"]} ({summary["scene"]} scene, seed {summary["seed"]}, size {summary["size"][0]}x'
             f'{summary["size"][1]}) in {seconds:.1f} s']
    for split, num in summary['num_samples'].items():
        conds = ', '.join(f'{k} {v}' for k, v in summary['conditions'][split].items())
        cases = ', '.join(f'{k} {v}' for k, v in summary['cases'][split].items())
        lines.append(f'  {split:5s} {num:4d} samples | conditions: {conds or "-"} | '
                     f'cases: {cases or "-"}')
    lines.append('  classes: ' + ', '.join(summary['classes']))
    for a, b, modality in summary['pairs']:
        modalities = modality.split('+')
        lines.append(f'  {a} / {b}: told apart by ' + (f'{modality} only' if len(modalities) == 1
                                                       else ' and by '.join(modalities)))
    lines.append(f'  metadata: {summary["meta_path"]}')
    return '\n'.join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    summary = make_synthetic_deliver(
        args.out or SCENES[args.scene]['data_root'], scene=args.scene, num_train=args.num_train, num_val=args.num_val, num_test=args.num_test,
        size=tuple(args.size), seed=args.seed, overwrite=args.overwrite)
    print(format_summary(summary, time.perf_counter() - start))
    return summary


if __name__ == '__main__':
    main()

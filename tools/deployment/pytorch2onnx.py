"""Export a trained multimodal model to ONNX (mmseg 0.x's tool name and flags).

    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --output-file FILE.onnx
        [--shape H W] [--dynamic-shape] [--with-logits] [--no-skip-absent]
        [--opset-version 18] [--verify] [--cfg-options KEY=VALUE ...]

Graph inputs: one float32 (B, C, H, W) tensor per modality, named by the modality, as the
loader produces it (before normalisation, 3-channel files in BGR order), and ``present``, a
bool mask with one entry per modality. Normalisation, the zeroing of absent modalities, the
decode head and the resize to the input size run inside the graph; the output is ``labels``
(B, H, W) and, with --with-logits, ``logits``. Fixed shape (default): batch 1 and --shape
(default: the data preprocessor's size); an absent modality's branch does not run.
--dynamic-shape: any batch, heights and widths that are multiples of 64 (at least 128); every
branch runs. The exporter is ``torch.onnx.export(dynamo=True)``; the ONNX checker runs on the
file. --verify compares the file with the PyTorch model on every modality subset (random
frame): label agreement and the largest logit difference. docs/en/user_guides/deploy.md.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/
import _common  # noqa: E402,F401,I001  (first: EQUISEG_COMPAT=all, quiet stack warnings)


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Export a multimodal segmentor to ONNX.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--output-file', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: the data preprocessor\'s size)')
    parser.add_argument('--dynamic-shape', action='store_true',
                        help='any batch and any size that is a multiple of 64 (at least 128); '
                             'absent branches then run on zeros')
    parser.add_argument('--with-logits', action='store_true',
                        help='also output the logits (B, K, H, W)')
    parser.add_argument('--no-skip-absent', action='store_true',
                        help='fixed shape: run absent branches on zeros instead of storing '
                             'their outputs (a smaller file)')
    parser.add_argument('--opset-version', type=int, default=18, help='ONNX opset (18)')
    parser.add_argument('--verify', action='store_true',
                        help='compare with the PyTorch model on every modality subset')
    parser.add_argument('--device', default='cpu',
                        help="onnxruntime device of --verify: 'cpu' or 'cuda:N'")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    args = parser.parse_args(argv)
    for what, path in (('config', args.config), ('checkpoint', args.checkpoint)):
        if not osp.isfile(path):
            parser.error(f'{what} file {path} does not exist')
    if not args.output_file.endswith('.onnx'):
        parser.error(f'--output-file must name a .onnx file, got {args.output_file}')
    if args.shape is not None and min(args.shape) < 1:
        parser.error(f'--shape takes two positive ints, got {args.shape}')
    if args.dynamic_shape and args.no_skip_absent:
        parser.error('--no-skip-absent is for fixed-shape exports (--dynamic-shape never '
                     'skips)')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import equiseg_mm  # noqa: F401  (registration)
    from equiseg_mm.apis import init_multimodal_model
    from equiseg_mm.deploy import export_onnx, verify_onnx
    try:
        model = init_multimodal_model(args.config, args.checkpoint, device='cpu',
                                      cfg_options=args.cfg_options, backend='pytorch')
        meta = export_onnx(model, args.output_file, shape=args.shape,
                           dynamic_shape=args.dynamic_shape, with_logits=args.with_logits,
                           skip_absent=False if args.no_skip_absent else None,
                           opset_version=args.opset_version)
    except (ValueError, FileNotFoundError, TypeError, RuntimeError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    shape = 'any batch, H and W multiples of 64 (>= 128)' if meta['shape'] is None else \
        f'batch 1, {meta["shape"][0]}x{meta["shape"][1]}'
    print(f'wrote {args.output_file} in {meta["export_s"]:.1f}s: opset {meta["opset"]}, '
          f'{shape}; inputs {meta["inputs"]} + {meta["mask"]!r}; outputs {meta["outputs"]}; '
          f'absent branches {"skipped" if meta["skip_absent"] else "run on zeros"}; '
          'ONNX checker passed')
    if args.verify:
        shape = meta['shape']
        if shape is None:  # the dynamic export's example size
            d = meta['size_divisor']
            base = args.shape or getattr(model.data_preprocessor, 'size', None) or (d, d)
            shape = [max(2 * d, -(-s // d) * d) for s in base]
        rows = verify_onnx(model, args.output_file, shape=shape, device=args.device)
        print(f'{"subset":<28} {"labels agree":>12} {"max |logit diff|":>17}')
        for r in rows:
            diff = '-' if r['max_logit_diff'] is None else f'{r["max_logit_diff"]:.2e}'
            print(f'{r["subset"]:<28} {r["agreement"]:>12.4%} {diff:>17}')
        worst = min(r['agreement'] for r in rows)
        print(f'lowest agreement {worst:.4%} ({rows[0]["pixels"]} pixels per subset)')
        if worst < 0.999:
            print('error: labels agree on less than 99.9% of the pixels', file=sys.stderr)
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())

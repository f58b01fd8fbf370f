"""Segment one multimodal frame with a trained model; absent sensors are simply left out.

The modality flags come from the config: an RGB-D-E-L config offers --rgb, --depth, --event and
--lidar, an RGB-D config --rgb and --depth. A modality without a flag is treated as missing
(zeroed after normalisation, as in the robustness test).

    python tools/infer.py CONFIG CHECKPOINT --rgb a.png --depth b.png [--event c.png]
        [--lidar d.png] [--modality name=path ...] --out-dir DIR [--device cpu] [--opacity 0.5]
        [--backend pytorch|onnxruntime]

CHECKPOINT is a PyTorch checkpoint, or with --backend onnxruntime a model exported by
tools/deployment/pytorch2onnx.py (the same outputs; docs/en/user_guides/deploy.md).

Writes DIR/<stem>.png (label map of class indices) and DIR/<stem>_overlay.png (palette blended
on the RGB image, or the palette alone without RGB); <stem> is the first given file's name.
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional

import _common  # noqa: F401  (EQUISEG_COMPAT=all, quiet stack warnings)

_FIXED = ('config', 'checkpoint', 'modality', 'out_dir', 'device', 'opacity', 'name',
          'cfg_options', 'backend', 'help')


def _config_modalities(config: str) -> List[str]:
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    names = cfg.model.data_preprocessor.get('modalities') or cfg.get('modalities')
    if not names:
        raise ValueError(f'config {config} names no modalities (top-level `modalities` or '
                         f'model.data_preprocessor.modalities)')
    return [str(n) for n in names]


def _parser(modalities: List[str]) -> argparse.ArgumentParser:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Segment one multimodal frame (absent modality flags = missing sensors)',
        allow_abbrev=False)
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (.onnx with --backend onnxruntime)')
    group = parser.add_argument_group('modalities of this config')
    for name in modalities:
        group.add_argument(f'--{name}', dest=f'mod_{name}', metavar='PATH',
                           help=f'{name} file (leave out for a missing {name} sensor)')
    parser.add_argument('--modality', action='append', default=[], metavar='NAME=PATH',
                        help='generic form of the modality flags; may be repeated')
    parser.add_argument('--out-dir', default='work_dirs/infer', help='output folder')
    parser.add_argument('--name', help='output file stem (default: the first file\'s stem)')
    parser.add_argument('--device', default='cpu', help="torch device, e.g. 'cpu', 'cuda:0'")
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='palette weight of the overlay on the RGB image, in (0, 1]')
    parser.add_argument('--backend', choices=('pytorch', 'onnxruntime'),
                        help='run the PyTorch checkpoint or an exported .onnx file in '
                             'onnxruntime (default: by the checkpoint\'s extension)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    return parser


def _collect(args, modalities: List[str], parser) -> Dict[str, str]:
    files: Dict[str, str] = {}
    for name in modalities:
        path = getattr(args, f'mod_{name}')
        if path is not None:
            files[name] = path
    for item in args.modality:
        name, sep, path = item.partition('=')
        if not sep or not name or not path:
            parser.error(f'--modality takes NAME=PATH, got {item!r}')
        if name not in modalities:
            parser.error(f'unknown modality {name!r}; this config\'s modalities are '
                         f'{modalities}')
        if name in files:
            parser.error(f'modality {name!r} is given twice')
        files[name] = path
    if not files:
        parser.error('no modality given; give at least one of '
                     + ', '.join(f'--{m} PATH' for m in modalities))
    for name, path in files.items():
        if not osp.isfile(path):
            parser.error(f'the {name!r} file {path} does not exist (or is not a file)')
    return files


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument('config', nargs='?')
    known, _ = pre.parse_known_args(argv)
    modalities: List[str] = []
    if known.config and not known.config.startswith('-'):
        if not osp.isfile(known.config):
            _parser([]).error(f'config file {known.config} does not exist')
        modalities = _config_modalities(known.config)
    clash = [m for m in modalities if m.replace('-', '_') in _FIXED]
    if clash:
        _parser([]).error(f'modalities {clash} clash with the options of this tool; use '
                          f'--modality NAME=PATH')
    parser = _parser(modalities)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f'unrecognised arguments {unknown}; this config\'s modalities are '
                     f'{modalities} (flags ' + ', '.join(f'--{m}' for m in modalities) + ')')
    if not 0.0 < args.opacity <= 1.0:
        parser.error(f'--opacity must be in (0, 1], got {args.opacity}')
    files = _collect(args, modalities, parser)
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint file {args.checkpoint} does not exist')

    import equiseg_mm  # noqa: F401  (registration)
    from equiseg_mm.apis import inference_multimodal, init_multimodal_model, save_prediction
    try:
        model = init_multimodal_model(args.config, args.checkpoint, device=args.device,
                                      cfg_options=args.cfg_options, backend=args.backend)
        result = inference_multimodal(model, files)
        stem = args.name or osp.splitext(osp.basename(next(iter(files.values()))))[0]
        rgb_name = getattr(model.data_preprocessor, 'rgb_modality', 'rgb')
        paths = save_prediction(model, result, osp.join(args.out_dir, f'{stem}.png'),
                                rgb=files.get(rgb_name), opacity=args.opacity)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    missing = result.metainfo['missing_modalities']
    print('modalities used: ' + ', '.join(result.metainfo['present_modalities']))
    print('modalities missing (zeroed): ' + (', '.join(missing) if missing else 'none'))
    print(f'label map: {paths["label"]}')
    print(f'overlay:   {paths["overlay"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

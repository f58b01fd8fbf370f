"""Convert an official SegFormer ``mit_b*.pth`` ImageNet checkpoint to mmseg's MiT key names.

    python tools/model_converters/convert_mit_checkpoint.py mit_b0.pth pretrain/mit_b0_mmseg.pth

The result loads into mmseg's ``MixVisionTransformer`` and, through
``init_cfg=dict(type='Pretrained', checkpoint=...)``, into every branch of ``MultiModalMiT``
(which also converts official names on the fly, so this step is optional).
"""
import argparse
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/: _common
import _common  # noqa: E402,F401,I001  (first: EQUISEG_COMPAT=all)
from equiseg_mm.models.backbones import convert_segformer_mit_keys  # noqa: E402
from equiseg_mm.utils.checkpoint import load_checkpoint_file  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert official SegFormer MiT keys to MMSegmentation MiT keys')
    parser.add_argument('src', help='official checkpoint (mit_b0.pth ... mit_b5.pth)')
    parser.add_argument('dst', help='where to save the converted state dict')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not osp.isfile(args.src):
        raise FileNotFoundError(f'checkpoint {args.src} does not exist')
    checkpoint = load_checkpoint_file(args.src, map_location='cpu')
    for wrapper in ('state_dict', 'model'):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
    converted = convert_segformer_mit_keys(checkpoint)
    if osp.dirname(args.dst):
        os.makedirs(osp.dirname(args.dst), exist_ok=True)
    torch.save(converted, args.dst)
    print(f'converted {len(checkpoint)} keys into {len(converted)} mmseg MiT keys: {args.dst}')


if __name__ == '__main__':
    main()

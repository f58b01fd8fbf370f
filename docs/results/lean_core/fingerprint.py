"""Losses, gradients and outputs of every shipped leaf config on one fixed batch.

``--save FILE`` writes them (with the model's state dict, so a later code version loads the very
same weights); ``--compare FILE`` rebuilds each model, loads the saved weights, reruns and
reports, per config, whether every loss, gradient and output (and the seeded initial weights)
is bit-identical.

    PYTHONPATH=/path/to/old/checkout python docs/results/lean_core/fingerprint.py --save before.pt
    python docs/results/lean_core/fingerprint.py --compare before.pt   # on the new code
"""
import argparse
import glob
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import equiseg_mm  # noqa: F401
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def _batch(cfg, h=64, w=96, batch=2):
    g = torch.Generator().manual_seed(0)
    channels = sum(cfg.model.data_preprocessor.channels)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (channels, h, w), dtype=torch.uint8, generator=g))
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(
            0, cfg.model.decode_head.num_classes, (1, h, w), generator=g))
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        inputs[-1][:, :4, :4] = 0
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def run(path, state=None):
    cfg = Config.fromfile(path)
    cfg.model.backbone.pop('init_cfg', None)  # no ImageNet weights on this machine
    cfg.model.backbone.get('branch', {}).pop('init_cfg', None)
    cfg.model.data_preprocessor.size = None  # the batch as it is, not padded to the crop
    cfg.model.data_preprocessor.size_divisor = 32
    cfg.model.test_cfg = dict(mode='whole')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    out = {f'init/{k}': v.clone() for k, v in model.state_dict().items()}
    if state is not None:
        model.load_state_dict(state)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    torch.manual_seed(1)
    data = model.data_preprocessor(_batch(cfg), training=True)
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    out.update({f'loss/{k}': v.detach().clone() for k, v in losses.items()})
    out.update({f'grad/{n}': p.grad.clone() for n, p in model.named_parameters()
                if p.grad is not None})
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(_batch(cfg), training=False)
        out['tensor'] = model(**data, mode='tensor').clone()
        preds = model(**data, mode='predict')
        out['predict'] = torch.stack([p.seg_logits.data for p in preds])
        one = _batch(cfg, batch=1)  # batch 1: the layout case the fast path handles
        out['tensor_b1'] = model(**model.data_preprocessor(one, False), mode='tensor').clone()
    return state, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--save')
    parser.add_argument('--compare')
    args = parser.parse_args()
    init_default_scope('mmseg')
    configs = sorted(glob.glob(osp.join(ROOT, 'configs', 'equiseg', '*.py')) +
                     glob.glob(osp.join(ROOT, 'configs', 'baselines', '*.py')))
    saved = torch.load(args.compare, weights_only=True) if args.compare else {}
    result = {}
    for path in configs:
        name = osp.basename(path)
        if args.compare:
            if name not in saved:
                print(f'{name}: not in {args.compare}')
                continue
            _, out = run(path, saved[name]['state'])
            ref = saved[name]['out']
            keys = sorted(set(ref) | set(out))
            bad = [k for k in keys if k not in ref or k not in out or
                   ref[k].shape != out[k].shape or not torch.equal(ref[k], out[k])]
            worst = max((float((ref[k].double() - out[k].double()).abs().max())
                         for k in bad if k in ref and k in out
                         and ref[k].shape == out[k].shape), default=0.)
            print(f'{name}: {len(keys)} tensors, {len(keys) - len(bad)} bit-identical'
                  + (f'; differ: {bad[:5]} (max abs diff {worst:.3g})' if bad else ''))
        else:
            state, out = run(path)
            result[name] = dict(state=state, out=out)
            print(f'{name}: {len(out)} tensors')
    if args.save:
        torch.save(result, args.save)


if __name__ == '__main__':
    main()

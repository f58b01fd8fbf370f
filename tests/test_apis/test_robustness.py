"""The robustness evaluation API: a checkpoint evaluated with the missing-modality loop."""
import os.path as osp

import torch
from mmengine.logging import HistoryBuffer

from equiseg_mm.apis import evaluate_robustness, init_multimodal_model
from _synthetic_deliver import make_synthetic_deliver

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'equiseg', 'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
DIMS = [8, 8, 8, 8]


def test_evaluate_robustness_loads_the_checkpoint_and_returns_the_metrics(tmp_path):
    data_root = tmp_path / 'data'
    make_synthetic_deliver(str(data_root), num_train=2, num_val=2, num_test=2, size=(48, 64))
    options = {
        'model.backbone.embed_dims': 8, 'model.backbone.num_layers': [1, 1, 1, 1],
        'model.backbone.num_heads': [1, 1, 1, 1], 'model.neck.in_channels': DIMS,
        'model.neck.num_heads': [1, 1, 1, 1], 'model.decode_head.in_channels': DIMS,
        'model.decode_head.channels': 16, 'model.auxiliary_head.in_channels': DIMS,
        'test_dataloader.dataset.data_root': str(data_root),
        'test_dataloader.num_workers': 0, 'test_dataloader.persistent_workers': False,
    }
    model = init_multimodal_model(CONFIG, cfg_options=options)
    # a constant predictor: class 2 everywhere, whatever modalities are present
    state = model.state_dict()
    state['decode_head.conv_seg.weight'].zero_()
    state['decode_head.conv_seg.bias'].zero_()
    state['decode_head.conv_seg.bias'][2] = 1.0
    buffer = HistoryBuffer()
    buffer.update(0.5)  # an mmengine checkpoint: weights_only loading needs the allow-list
    ckpt = tmp_path / 'constant.pth'
    torch.save(dict(state_dict=state, message_hub=dict(log_scalars={'loss': buffer})), ckpt)

    metrics = evaluate_robustness(CONFIG, str(ckpt), str(tmp_path / 'work'), cfg_options=options,
                                  subsets=[['rgb'], ['depth']])
    assert all(isinstance(v, float) for v in metrics.values())
    singles = {k: v for k, v in metrics.items() if k.startswith('mm/single/')}
    assert set(singles) == {'mm/single/rgb', 'mm/single/depth'}, sorted(metrics)
    # the loaded constant predictor gives the same figures for every subset
    assert singles['mm/single/rgb'] == singles['mm/single/depth'] == metrics['mm/mIoU']
    reports = list((tmp_path / 'work').glob('*/robustness_report.json'))
    assert len(reports) == 1

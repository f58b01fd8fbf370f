"""tools/analysis_tools/modality_stats.py: per-modality mean/std over a split."""
import importlib.util
import os.path as osp

import cv2
import numpy as np
import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'equiseg', 'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')


def _tool():
    spec = importlib.util.spec_from_file_location(
        '_modality_stats', osp.join(ROOT, 'tools', 'analysis_tools', 'modality_stats.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stats_equal_the_files_pixels_in_the_preprocessors_channel_order(tmp_path, capsys):
    from _synthetic_deliver import make_synthetic_deliver
    root = str(tmp_path / 'data')
    make_synthetic_deliver(root, num_train=3, num_val=0, num_test=0, size=(32, 48))
    tool = _tool()
    stats = tool.main([CONFIG, '--num-samples', '2', '--cfg-options',
                       f'train_dataloader.dataset.data_root={root}'])
    out = capsys.readouterr().out
    assert stats['num_samples'] == 2 and 'mean=dict(rgb=[' in out and 'std=dict(rgb=[' in out
    # the reference: the first two training frames' files, read with cv2 and flipped to RGB
    cfg = Config.fromfile(CONFIG)
    cfg.train_dataloader.dataset.data_root = root
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    ds = DATASETS.build(dict(cfg.train_dataloader.dataset, pipeline=[]))
    for name in ('rgb', 'depth'):
        pixels = np.concatenate([cv2.imread(ds[i]['modality_paths'][name])[..., ::-1]
                                 .reshape(-1, 3) for i in range(2)]).astype(np.float64)
        np.testing.assert_allclose(stats['mean'][name], pixels.mean(0), atol=1e-3)
        np.testing.assert_allclose(stats['std'][name], np.maximum(pixels.std(0), 1e-3),
                                   atol=1e-3)


def test_bad_arguments(tmp_path):
    tool = _tool()
    with pytest.raises(SystemExit):
        tool.parse_args([str(tmp_path / 'nope.py')])
    with pytest.raises(SystemExit):
        tool.parse_args([CONFIG, '--num-samples', '0'])

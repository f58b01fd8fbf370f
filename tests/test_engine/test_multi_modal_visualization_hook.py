"""Per-modality panels: the drawing function, the tool and the hook inside a real test run."""
import importlib.util
import os
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch

import equiseg_mm  # noqa: F401,I001  (first: registration)
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, HOOKS

from equiseg_mm.apis import init_multimodal_model
from _synthetic_deliver import make_synthetic_deliver
from equiseg_mm.engine import MultiModalVisualizationHook
from equiseg_mm.visualization import draw_modality_panel, visualize_modalities

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'equiseg', 'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
MODS = ['rgb', 'depth', 'event', 'lidar']
H, W = 48, 64
DIMS, HEADS = [8, 8, 8, 8], [1, 1, 1, 1]
TINY = {
    'model.backbone.embed_dims': 8, 'model.backbone.num_layers': [1, 1, 1, 1],
    'model.backbone.num_heads': HEADS, 'model.neck.in_channels': DIMS,
    'model.neck.num_heads': HEADS, 'model.decode_head.in_channels': DIMS,
    'model.decode_head.channels': 16, 'model.auxiliary_head.in_channels': DIMS,
}
META = dict(classes=('a', 'b', 'c'), palette=[[255, 0, 0], [0, 255, 0], [0, 0, 255]])


def _panel_size(layout, rows, cols):
    th, tw = layout['tile_hw']
    height = layout['header'] + rows * (th + layout['bar']) + (rows - 1) * layout['gap']
    return height + layout['legend'], cols * tw + (cols - 1) * layout['gap']


def _tile(panel, layout, row, col):
    th, tw = layout['tile_hw']
    y = layout['header'] + row * (th + layout['bar'] + layout['gap']) + layout['bar']
    x = col * (tw + layout['gap'])
    return panel[y:y + th, x:x + tw]


def test_draw_modality_panel_layout_and_tiles():
    rng = np.random.RandomState(0)
    inputs = rng.randint(0, 256, (3 + 1 + 3, 12, 16)).astype(np.uint8)
    gt = rng.randint(0, 3, (12, 16))
    gt[0, :] = 255  # ignore stays black
    preds = {(): np.zeros((12, 16), int), ('rgb', ): np.ones((1, 12, 16), int),
             ('depth', ): torch.full((12, 16), 2), ('event', ): np.zeros((12, 16), int)}
    panel, layout = draw_modality_panel(inputs, ['rgb', 'depth', 'event'], [3, 1, 3], preds,
                                        META, gt=gt, header='frame 7', tile_width=(64, 128))
    assert layout['rows'] == [
        ['rgb', 'depth', 'event', 'ground truth'],
        ['pred: all', 'pred: no rgb', 'pred: no depth', 'pred: no event'],
    ]
    assert layout['tile_hw'] == (48, 64)  # 16 wide scaled up to the smallest tile width
    assert panel.dtype == np.uint8 and panel.shape == _panel_size(layout, 2, 4) + (3, )

    up = 4  # nearest upscale of a 12x16 map to 48x64
    rgb = _tile(panel, layout, 0, 0)
    np.testing.assert_array_equal(
        rgb, mmcv.imresize(inputs[:3][::-1].transpose(1, 2, 0), (64, 48), interpolation='area'))
    depth = _tile(panel, layout, 0, 1)
    assert (depth[..., 0] == depth[..., 1]).all()  # one channel shown grey
    palette = np.array(META['palette'], np.uint8)
    expected_gt = np.where((gt < 3)[..., None], palette[np.minimum(gt, 2)], 0)
    np.testing.assert_array_equal(_tile(panel, layout, 0, 3),
                                  expected_gt.repeat(up, 0).repeat(up, 1))
    for col, cls in enumerate([0, 1, 2, 0]):
        tile = _tile(panel, layout, 1, col)
        assert (tile == palette[cls]).all(), layout['rows'][1][col]
    # the legend under the grid has one swatch of every class shown (a, b, c), nothing else
    assert layout['legend'] > 0
    legend = panel[-layout['legend']:]
    for colour in palette:
        assert (legend == colour).all(axis=2).sum() >= 10 * 10, colour


def test_draw_modality_panel_legend_lists_only_the_classes_shown():
    inputs = np.zeros((3, 10, 10), np.uint8)
    pred = np.ones((10, 10), int)  # class 'b' only
    panel, layout = draw_modality_panel(inputs, ['rgb'], [3], {(): pred}, META,
                                        tile_width=(20, 40))
    legend = panel[-layout['legend']:]
    assert (legend == META['palette'][1]).all(axis=2).sum() >= 10 * 10
    for other in (0, 2):
        assert not (legend == META['palette'][other]).all(axis=2).any()
    bare, bare_layout = draw_modality_panel(inputs, ['rgb'], [3], {(): pred}, META,
                                            tile_width=(20, 40), legend=False)
    assert bare_layout['legend'] == 0 and bare.shape[0] == panel.shape[0] - layout['legend']


def test_draw_modality_panel_without_gt_fills_rows_and_checks_inputs():
    inputs = np.zeros((3, 10, 10), np.uint8)
    panel, layout = draw_modality_panel(inputs, ['rgb'], [3], {(): np.zeros((10, 10), int)},
                                        META, tile_width=(20, 40))
    assert layout['rows'] == [['rgb'], ['pred: all']] and layout['header'] == 0
    assert panel.shape == _panel_size(layout, 2, 1) + (3, )
    with pytest.raises(ValueError, match=r'sum\(C\)=4'):
        draw_modality_panel(inputs, ['rgb', 'depth'], [3, 1], {}, META)
    with pytest.raises(ValueError, match='opacity'):
        draw_modality_panel(inputs, ['rgb'], [3], {}, META, opacity=0)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('vis') / 'synthetic_deliver'
    make_synthetic_deliver(str(root), num_train=4, num_val=4, num_test=4, size=(H, W))
    return str(root)


def test_visualize_modalities_writes_one_panel_per_sample(data_root, tmp_path):
    model = init_multimodal_model(
        CONFIG, cfg_options=dict(TINY, **{'test_dataloader.dataset.data_root': data_root}))
    init_default_scope('mmseg')
    dataset = DATASETS.build(model.cfg.test_dataloader.dataset)
    model.train()
    with model.data_preprocessor.protocol(missing=('event', )):
        written = visualize_modalities(model, dataset, str(tmp_path / 'vis'), num_samples=3)
        assert model.training and model.data_preprocessor.missing_modalities == ('event', )
    assert len(written) == 3 and sorted(os.listdir(tmp_path / 'vis')) == sorted(
        osp.basename(p) for p in written)
    stem = osp.splitext(osp.basename(dataset.get_data_info(0)['img_path']))[0]
    assert osp.basename(written[0]) == f'0000_{stem}.png'
    layout_probe = draw_modality_panel(dataset[0]['inputs'], MODS, [3] * 4,
                                       {(): np.zeros((H, W), int)}, model.dataset_meta,
                                       header='x', legend=False)[1]
    grid_h, grid_w = _panel_size(layout_probe, 2, 5)  # 4 inputs + GT; 5 predictions
    for path in written:
        with open(path, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
        panel = mmcv.imread(path)
        assert panel.shape[1:] == (grid_w, 3)
        assert panel.shape[0] > grid_h  # the grid and a class legend under it
    with pytest.raises(ValueError, match='out of range'):
        visualize_modalities(model, dataset, str(tmp_path / 'x'), indices=[4])


def test_tool_reuses_the_drawing(data_root, tmp_path):
    model = init_multimodal_model(CONFIG, cfg_options=TINY)
    ckpt = tmp_path / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=model.dataset_meta)),
               ckpt)
    spec = importlib.util.spec_from_file_location(
        'visualize_modalities_tool', osp.join(ROOT, 'tools', 'visualize_modalities.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    options = [f'{k}={v}'.replace(' ', '') for k, v in TINY.items()]
    out = tmp_path / 'panels'
    rc = tool.main([CONFIG, str(ckpt), '--num-samples', '2', '--out-dir', str(out),
                    '--data-root', data_root, '--split', 'val', '--cfg-options', *options])
    assert rc == 0 and len(os.listdir(out)) == 2
    assert tool.main([CONFIG, str(tmp_path / 'nope.pth'), '--out-dir', str(out)]) == 1


def test_hook_draws_after_a_test_run(data_root, tmp_path):
    from mmengine.runner import Runner
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(TINY)
    cfg.merge_from_dict({
        'test_dataloader.dataset.data_root': data_root, 'test_dataloader.batch_size': 2,
        'test_dataloader.num_workers': 0, 'test_dataloader.persistent_workers': False,
        'test_cfg.subsets': [['rgb']], 'default_hooks.visualization.draw': False,
    })
    cfg.work_dir = str(tmp_path / 'work')
    cfg.custom_hooks = [dict(type='MultiModalVisualizationHook', num_samples=2, phases='test')]
    runner = Runner.from_cfg(cfg)
    runner.test()
    out_dir = osp.join(runner.log_dir, 'vis_modalities')
    names = sorted(os.listdir(out_dir))
    assert len(names) == 2 and all(n.startswith('test_000') for n in names)
    assert runner.model.data_preprocessor.missing_modalities == ()
    # the call tools/run_demo.py makes after runner.test()
    written = visualize_modalities(runner.model, runner.test_dataloader.dataset,
                                   osp.join(runner.log_dir, 'demo_panels'), num_samples=1)
    assert len(written) == 1 and osp.isfile(written[0])


def test_hook_arguments_are_checked():
    assert HOOKS.get('MultiModalVisualizationHook') is MultiModalVisualizationHook
    with pytest.raises(ValueError, match='num_samples'):
        MultiModalVisualizationHook(num_samples=0)
    with pytest.raises(ValueError, match=r"phases.*\['val', 'test'\]"):
        MultiModalVisualizationHook(phases=('train', ))
    with pytest.raises(ValueError, match='opacity'):
        MultiModalVisualizationHook(opacity=2)


def test_visualization_needs_a_multimodal_preprocessor_and_not_the_apis():
    """The panels run the model through the data preprocessor's protocol; the visualisation
    package depends on the models, never on the apis (mmseg's direction)."""
    import subprocess
    import sys

    from mmengine.model import BaseModel

    from equiseg_mm.visualization import predict_modality_variants

    class Plain(BaseModel):
        def forward(self, *args, **kwargs):
            pass

    with pytest.raises(TypeError, match='predict_modality_variants needs .*'
                                        'MultiModalSegDataPreProcessor'):
        predict_modality_variants(Plain(), dict(inputs=[], data_samples=[]))
    code = ('import sys, equiseg_mm.visualization, equiseg_mm.engine; '
            "sys.exit('equiseg_mm.apis' in sys.modules)")
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]

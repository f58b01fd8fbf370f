"""``tools/infer.py``: run as a user would (a subprocess on a tiny checkpoint), and its help and
error paths through its ``main(argv)`` in this process (the same code; a subprocess would spend
most of its time importing torch)."""
import os
import os.path as osp
import subprocess
import sys

import mmcv
import numpy as np
import pytest
import torch

import importlib.util

import equiseg_mm  # noqa: F401,I001  (first: compat fixes, registration)
from equiseg_mm.apis import inference_multimodal, init_multimodal_model
from _synthetic_deliver import make_synthetic_deliver

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASE = osp.join(ROOT, 'configs', 'equiseg', 'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
TOOL = osp.join(ROOT, 'tools', 'infer.py')
H, W = 48, 64
_spec = importlib.util.spec_from_file_location('_infer_tool', TOOL)
infer_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(infer_tool)

_CONFIG = '''\
_base_ = [{base!r}]
dims = [8, 8, 8, 8]
heads = [1, 1, 1, 1]
model = dict(
    backbone=dict(embed_dims=8, num_layers=[1, 1, 1, 1], num_heads=heads),
    neck=dict(in_channels=dims, num_heads=heads),
    decode_head=dict(in_channels=dims, channels=16),
    auxiliary_head=dict(in_channels=dims))
'''


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A tiny config file, its random-weight checkpoint and one test frame's files."""
    root = tmp_path_factory.mktemp('infer_cli')
    data = root / 'synthetic_deliver'
    make_synthetic_deliver(str(data), num_train=4, num_val=4, num_test=4, size=(H, W))
    config = root / 'tiny.py'
    config.write_text(_CONFIG.format(base=BASE))
    model = init_multimodal_model(str(config))
    ckpt = root / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=model.dataset_meta)),
               ckpt)
    frame = data / 'img' / 'sun' / 'test'
    rgb = sorted(frame.rglob('*_rgb_front.png'))[0]
    files = dict(rgb=str(rgb))
    for name, folder in (('depth', 'hha'), ('event', 'event'), ('lidar', 'lidar')):
        files[name] = str(rgb).replace(f'{os.sep}img{os.sep}', f'{os.sep}{folder}{os.sep}') \
            .replace('_rgb_front', f'_{name}_front')
        assert osp.isfile(files[name])
    return model, str(config), str(ckpt), files, root


def _run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    return subprocess.run([sys.executable, TOOL, *map(str, args)], cwd=str(cwd), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)


def test_infer_writes_label_and_overlay(setup, tmp_path):
    model, config, ckpt, files, _ = setup
    out = tmp_path / 'out'
    proc = _run([config, ckpt, '--rgb', files['rgb'], '--modality', f'lidar={files["lidar"]}',
                 '--out-dir', out], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stem = osp.splitext(osp.basename(files['rgb']))[0]
    assert 'modalities used: rgb, lidar' in proc.stdout
    assert 'modalities missing (zeroed): depth, event' in proc.stdout
    assert str(out / f'{stem}.png') in proc.stdout
    label = mmcv.imread(str(out / f'{stem}.png'), flag='unchanged')
    overlay = mmcv.imread(str(out / f'{stem}_overlay.png'))
    assert label.shape == (H, W) and overlay.shape == (H, W, 3)
    expected = inference_multimodal(model, dict(rgb=files['rgb'], lidar=files['lidar']))
    np.testing.assert_array_equal(label, expected.pred_sem_seg.data[0].numpy())


def _main(args, capsys):
    """``tools/infer.py``'s exit status, stdout and stderr for ``args``, run in this process."""
    try:
        code = infer_tool.main([str(a) for a in args])
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_modality_flags_come_from_the_config(setup, capsys):
    _, config, ckpt, _, _ = setup
    code, out, _ = _main([config, ckpt, '--help'], capsys)
    assert code == 0
    for name in ('--rgb', '--depth', '--event', '--lidar', '--modality'):
        assert name in out


@pytest.mark.parametrize('case', ['unknown_flag', 'unknown_generic', 'missing_file', 'nothing',
                                  'bad_size'])
def test_infer_errors_exit_nonzero_with_a_clear_message(setup, tmp_path, case, capsys):
    _, config, ckpt, files, _ = setup
    narrow = tmp_path / 'narrow_depth.png'
    mmcv.imwrite(np.zeros((H, 40, 3), np.uint8), str(narrow))
    args, message = {
        'unknown_flag': (['--thermal', files['rgb']],
                         "['rgb', 'depth', 'event', 'lidar']"),
        'unknown_generic': (['--modality', f'thermal={files["rgb"]}'],
                            "unknown modality 'thermal'"),
        'missing_file': (['--rgb', files['rgb'], '--depth', tmp_path / 'nope_depth.png'],
                         "the 'depth' file"),
        'nothing': ([], 'no modality given'),
        'bad_size': (['--rgb', files['rgb'], '--depth', narrow],
                     "error: modality 'depth': got shape (48, 40, 3)"),
    }[case]
    code, _, err = _main([config, ckpt, *args, '--out-dir', tmp_path / 'out'], capsys)
    assert code not in (0, None)
    assert message in err, err[-2000:]
    assert not (tmp_path / 'out').exists()

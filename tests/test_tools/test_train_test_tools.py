"""``tools/train.py`` and ``tools/test.py`` run as a user runs them: in a subprocess, on the tiny
config, writing into a temporary work dir (their argument and file checks through ``main()`` in
this process: the same code, without a subprocess's seconds of imports)."""
import glob
import json
import math
import os.path as osp
import re

import cv2
import numpy as np
import pytest
import torch
from tiny_config import PYTHON, TOOLS, describe, run_tool, run_tool_main

NUM_CLASSES = 25


def _run_dir(work_dir):
    """The single ``<timestamp>`` folder mmengine writes the log and the report into."""
    dirs = [d for d in glob.glob(osp.join(str(work_dir), '*')) if osp.isdir(d)]
    assert len(dirs) == 1, f'expected one run folder in {work_dir}, got {dirs}'
    return dirs[0]


def _log_text(work_dir):
    run_dir = _run_dir(work_dir)
    with open(osp.join(run_dir, osp.basename(run_dir) + '.log')) as f:
        return f.read()


def test_train_writes_checkpoints(trained):
    assert trained.proc.returncode == 0, describe(trained.proc)
    work_dir = trained.work_dir
    with open(work_dir / 'last_checkpoint') as f:
        assert osp.basename(f.read().strip()) == 'iter_4.pth'
    ckpt = torch.load(str(trained.checkpoint), map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 4
    assert any(k.startswith('backbone.branches.') for k in ckpt['state_dict'])
    assert 'optimizer' in ckpt and 'param_schedulers' in ckpt
    log = _log_text(work_dir)
    assert 'Iter(train) [4/4]' in log
    assert 'Saving checkpoint at 2 iterations' in log
    assert 'Iter(val) [2/2]' in log  # validation at the end of training
    # --cfg-options default_hooks.checkpoint.max_keep_ckpts=1 removed iter_2.pth
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_4.pth']
    assert (work_dir / osp.basename(trained.config)).is_file()  # the dumped config


def test_test_writes_report_label_maps_and_paintings(trained, tmp_path):
    assert trained.proc.returncode == 0, describe(trained.proc)
    work_dir, out_dir, show_dir = tmp_path / 'work_dir', tmp_path / 'preds', tmp_path / 'show'
    proc = run_tool([PYTHON, osp.join(TOOLS, 'test.py'), trained.config, trained.checkpoint,
                     '--work-dir', work_dir, '--out', out_dir, '--show-dir', show_dir,
                     '--cfg-options', 'test_cfg.subsets=[[rgb]]'], cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)

    # the robustness report of MissingModalityTestLoop, in the run folder of the work dir
    run_dir = _run_dir(work_dir)
    for ext in ('json', 'md', 'png'):
        assert osp.getsize(osp.join(run_dir, f'robustness_report.{ext}')) > 0, ext
    with open(osp.join(run_dir, 'robustness_report.json')) as f:
        report = json.load(f)
    assert report['modalities'] == ['rgb', 'depth', 'event', 'lidar']
    # --cfg-options replaced the config's subsets [['rgb'], ['depth']] by [['rgb']]
    assert sorted(report['settings']['EMM']) == ['full', 'rgb']
    assert report['settings']['EMM']['full']['num_samples'] == 4
    assert 0 <= report['figures']['mIoU'] <= 100

    # --out: one label map per test frame, at the frame's size, with valid class ids in
    # DeLiVER's own numbering (reduce_zero_label: train id c is written as c + 1, 0 = unlabelled)
    maps = sorted(glob.glob(osp.join(str(out_dir), '*.png')))
    assert len(maps) == 4, maps
    for path in maps:
        label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        assert label.shape == (48, 64), path
        assert label.dtype == np.uint8, path
        assert 1 <= label.min() and label.max() <= NUM_CLASSES, path

    # --show-dir: one painted prediction per test frame
    assert len(glob.glob(osp.join(str(show_dir), '**', '*.png'), recursive=True)) == 4


def test_test_refuses_a_checkpoint_of_other_class_order(trained, tmp_path):
    """tools/test.py with a checkpoint whose recorded classes are in another order: an error
    (ClassOrderHook), not per-class figures under the wrong names."""
    import torch
    from equiseg_mm.utils import load_checkpoint_file
    assert trained.proc.returncode == 0, describe(trained.proc)
    ckpt = load_checkpoint_file(trained.checkpoint)
    classes = list(ckpt['meta']['dataset_meta']['classes'])
    classes[0], classes[1] = classes[1], classes[0]
    ckpt['meta']['dataset_meta']['classes'] = tuple(classes)
    swapped = str(tmp_path / 'swapped.pth')
    torch.save(ckpt, swapped)
    proc = run_tool([PYTHON, osp.join(TOOLS, 'test.py'), trained.config, swapped,
                     '--work-dir', tmp_path / 'w', '--cfg-options', 'test_cfg.subsets=[[rgb]]'],
                    cwd=tmp_path)
    assert proc.returncode != 0
    assert "differ at 0: 'Fence' vs 'Building'" in proc.stderr, describe(proc)


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_missing_config_fails_with_its_path(tool, tmp_path, tiny_config, monkeypatch, capsys):
    missing = str(tmp_path / 'no_such_config.py')
    args = [missing]
    if tool == 'test':
        args.append(tiny_config)  # an existing file in the checkpoint position
    code, _, err = run_tool_main(tool, args + ['--work-dir', tmp_path / 'work_dir'],
                                 monkeypatch, capsys)
    assert code not in (0, None)
    assert missing in err, err
    assert not (tmp_path / 'work_dir').exists()


def test_missing_checkpoint_fails_with_its_path(tmp_path, tiny_config, monkeypatch, capsys):
    missing = str(tmp_path / 'no_such_checkpoint.pth')
    code, _, err = run_tool_main('test', [tiny_config, missing, '--work-dir',
                                          tmp_path / 'work_dir'], monkeypatch, capsys)
    assert code not in (0, None)
    assert missing in err, err
    assert not (tmp_path / 'work_dir').exists()


def test_train_with_modality_dropout_keeps_losses_finite(trained):
    # issue 12: with modality dropout the first backward through a dropped (all-zero) branch of
    # the freshly initialised model was NaN, so the second iteration's loss was NaN and
    # FiniteLossHook stopped the run. The shared tiny run trains with modality_dropout=0.5.
    assert trained.proc.returncode == 0, describe(trained.proc)
    assert 'model.data_preprocessor.modality_dropout=0.5' in trained.args
    log = _log_text(trained.work_dir)
    lines = [line for line in log.splitlines() if 'Iter(train)' in line]
    assert len(lines) == 4 and 'Iter(train) [4/4]' in lines[-1], log[-3000:]
    for line in lines:
        losses = [float(v) for v in re.findall(r'loss\S*: (\S+)', line)]
        assert losses and all(math.isfinite(v) for v in losses), line


def _no_amp_device(monkeypatch, available=False):
    """Make every device mmengine's ``AmpOptimWrapper`` accepts look (un)available."""
    import mmengine.device
    for name in ('is_cuda_available', 'is_npu_available', 'is_mlu_available',
                 'is_musa_available'):
        monkeypatch.setattr(mmengine.device, name, lambda: available)


@pytest.mark.parametrize('how', ['flag', 'config'])
def test_amp_without_a_gpu_fails_before_any_work(how, tmp_path, tiny_config, monkeypatch, capsys):
    _no_amp_device(monkeypatch)
    extra = ['--amp'] if how == 'flag' else ['--cfg-options', 'optim_wrapper.type=AmpOptimWrapper']
    args = [tiny_config, '--work-dir', tmp_path / 'work_dir'] + extra
    code, _, err = run_tool_main('train', args, monkeypatch, capsys)
    assert code not in (0, None)
    assert 'needs a GPU' in str(code) + err and 'without --amp' in str(code) + err, (code, err)
    assert not (tmp_path / 'work_dir').exists()


def test_amp_configs_need_a_gpu_to_train_not_to_test(tiny_config, tmp_path, monkeypatch):
    from _runner import check_amp_device, prepare_config, train_and_test
    _no_amp_device(monkeypatch)
    # a config saved by an AMP run on a GPU still loads for testing on a CPU
    cfg = prepare_config(tiny_config, cfg_options={'optim_wrapper.type': 'AmpOptimWrapper'})
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    with pytest.raises(ValueError, match='needs a GPU.*optim_wrapper.type=OptimWrapper'):
        check_amp_device(cfg)
    with pytest.raises(ValueError, match='needs a GPU'):
        check_amp_device(prepare_config(tiny_config, amp=True))
    check_amp_device(prepare_config(tiny_config))  # plain OptimWrapper: fine anywhere
    cfg.optim_wrapper = None
    check_amp_device(cfg)  # no optimizer at all (a test-only config): fine
    with pytest.raises(ValueError, match='needs a GPU'):  # the demo / sweep entry point
        train_and_test(tiny_config, str(tmp_path / 'run'), cfg_options={
            'optim_wrapper.type': 'AmpOptimWrapper'})
    assert not (tmp_path / 'run').exists()
    # where a device is there, --amp switches the wrapper and the check passes (nothing built)
    _no_amp_device(monkeypatch, available=True)
    cfg = prepare_config(tiny_config, amp=True)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    check_amp_device(cfg)

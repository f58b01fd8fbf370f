"""``tools/dist_train.sh`` and ``tools/dist_test.sh``: two torchrun processes on CPU (gloo), with
the configs' SyncBN, train the tiny config; rank 0 alone writes the checkpoints; then both
processes test the checkpoint with the robustness loop."""
import glob
import json
import os.path as osp

import pytest
import torch
from tiny_config import PYTHON, TOOLS, describe, free_port, run_tool, tool_env


def _cpu_env():
    """torchrun's environment: the venv's python, a free port, and no GPU (the test is about
    CPU processes; two nccl ranks could not share a single GPU anyway)."""
    return tool_env(PYTHON=PYTHON, PORT=free_port(), CUDA_VISIBLE_DEVICES='')


@pytest.fixture(scope='module')
def dist_trained(tmp_path_factory, tiny_config):
    root = tmp_path_factory.mktemp('dist_train')
    work_dir = root / 'work_dir'
    proc = run_tool(['bash', osp.join(TOOLS, 'dist_train.sh'), tiny_config, 2,
                     '--work-dir', work_dir], cwd=root,
                    env=_cpu_env())
    return proc, work_dir


def test_dist_train_two_cpu_processes(dist_trained, tiny_config):
    proc, work_dir = dist_trained
    assert proc.returncode == 0, describe(proc)  # torchrun fails if any rank fails
    log_files = glob.glob(osp.join(str(work_dir), '*', '*.log'))
    assert len(log_files) == 1, log_files  # rank 0 logs; the other rank logs errors only
    with open(log_files[0]) as f:
        log = f.read()
    assert 'Distributed launcher: pytorch' in log
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    assert "backend='gloo'" in log
    assert 'Iter(train) [4/4]' in log
    assert 'Iter(val) [1/1]' in log  # 4 val frames: one batch of 2 per process
    # one file per saved iteration, each a complete checkpoint of the unwrapped model
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_2.pth', 'iter_4.pth']
    with open(work_dir / 'last_checkpoint') as f:
        assert osp.basename(f.read().strip()) == 'iter_4.pth'
    ckpt = torch.load(str(work_dir / 'iter_4.pth'), map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 4
    keys = list(ckpt['state_dict'])
    assert keys and not any(k.startswith('module.') for k in keys)
    # SyncBN became BN on CPU; the parameters and running statistics keep their names
    assert 'decode_head.convs.0.bn.running_mean' in keys


def test_dist_test_two_cpu_processes(dist_trained, tiny_config, tmp_path):
    train_proc, train_dir = dist_trained
    assert train_proc.returncode == 0, describe(train_proc)
    work_dir, out_dir = tmp_path / 'work_dir', tmp_path / 'preds'
    proc = run_tool(['bash', osp.join(TOOLS, 'dist_test.sh'), tiny_config,
                     train_dir / 'iter_4.pth', 2, '--work-dir', work_dir, '--out', out_dir],
                    cwd=tmp_path, env=_cpu_env())
    assert proc.returncode == 0, describe(proc)
    reports = glob.glob(osp.join(str(work_dir), '*', 'robustness_report.json'))
    assert len(reports) == 1, reports
    with open(reports[0]) as f:
        report = json.load(f)
    # the results of both processes are gathered: all 4 test frames in every subset
    assert sorted(report['settings']['EMM']) == ['depth', 'full', 'rgb']
    for subset in report['settings']['EMM'].values():
        assert subset['num_samples'] == 4
    assert len(glob.glob(osp.join(str(out_dir), '*.png'))) == 4

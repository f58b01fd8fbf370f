"""``mim train mmseg`` and ``mim test mmseg``: the stock mmseg tools (packaged in mmseg/.mim),
run offline by OpenMIM, find the plugin through the config's ``custom_imports`` alone."""
import glob
import json
import os.path as osp

import pytest
import torch
from tiny_config import BIN_DIR, describe, run_tool

MIM = osp.join(BIN_DIR, 'mim')


@pytest.fixture(autouse=True)
def _mim_is_installed():
    assert osp.isfile(MIM), f'openmim is a requirement of equiseg-mm but {MIM} does not exist'


def test_mim_train(tmp_path, tiny_config):
    work_dir = tmp_path / 'work_dir'
    proc = run_tool([MIM, 'train', 'mmseg', tiny_config, '--work-dir', work_dir], cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert 'Training finished successfully' in proc.stdout, describe(proc)
    # mmseg's own tools/train.py ran, not ours
    assert osp.join('mmseg', '.mim', 'tools', 'train.py') in proc.stdout, describe(proc)
    with open(work_dir / 'last_checkpoint') as f:
        assert osp.basename(f.read().strip()) == 'iter_4.pth'
    ckpt = torch.load(str(work_dir / 'iter_4.pth'), map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 4
    assert any(k.startswith('backbone.branches.') for k in ckpt['state_dict'])


def test_mim_test(tmp_path, trained):
    assert trained.proc.returncode == 0, describe(trained.proc)
    work_dir = tmp_path / 'work_dir'
    proc = run_tool([MIM, 'test', 'mmseg', trained.config, '--checkpoint', trained.checkpoint,
                     '--work-dir', work_dir], cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert 'Testing finished successfully' in proc.stdout, describe(proc)
    assert osp.join('mmseg', '.mim', 'tools', 'test.py') in proc.stdout, describe(proc)
    # the config's test_cfg (MissingModalityTestLoop) wrote its report
    reports = glob.glob(osp.join(str(work_dir), '*', 'robustness_report.json'))
    assert len(reports) == 1, reports
    for ext in ('md', 'png'):
        assert osp.isfile(reports[0][:-len('json')] + ext)
    with open(reports[0]) as f:
        assert sorted(json.load(f)['settings']['EMM']) == ['depth', 'full', 'rgb']

"""``tools/train.py --resume``: a run killed with SIGKILL after its iteration-4 checkpoint goes on
from iteration 5 and ends where an uninterrupted run ends: the same iterations, and weights
bit-identical to those of an uninterrupted run started alongside (modality dropout on; the
config's ``RNGStateHook`` restores the random states, see ``tests/test_engine``).

To kill at a known point without racing a fast CPU run, the config adds a test hook that, in the
first run only (``STALL_ENV`` set), writes a marker and sleeps after iteration 5 (after the
iteration-4 checkpoint and one more optimiser step that the resumed run must redo). The test
waits for the marker and the checkpoint, then kills the process: on disk that is the state a crash
leaves.
"""
import os.path as osp
import re
import signal
import subprocess

import torch
from tiny_config import PYTHON, TOOLS, describe, run_tool, tool_env, wait_for, write_tiny_config

STALL_ENV = 'EQUISEG_TEST_STALL_AT'
_STALL_HOOK = '''\
"""A hook of test_resume.py: sleep after iteration int($EQUISEG_TEST_STALL_AT) until killed."""
import os
import os.path as osp
import time

from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class StallForKillHook(Hook):
    priority = 'LOWEST'  # after CheckpointHook has written this iteration's checkpoint

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        stall_at = os.environ.get('EQUISEG_TEST_STALL_AT')
        if stall_at and runner.iter + 1 == int(stall_at):
            open(osp.join(runner.work_dir, 'stalled'), 'w').close()
            time.sleep(600)
'''
_HOOK_CONFIG = '''
custom_imports = dict(imports=['equiseg_mm', 'stall_for_kill_hook'], allow_failed_imports=False)
custom_hooks = [dict(type='FiniteLossHook'), dict(type='RNGStateHook'),
                dict(type='StallForKillHook')]
'''


def _train_iters(log_path):
    with open(log_path) as f:
        return [int(i) for i in re.findall(r'Iter\(train\) \[\s*(\d+)/8\]', f.read())]


def test_resume_after_sigkill(tmp_path, tiny_data):
    (tmp_path / 'stall_for_kill_hook.py').write_text(_STALL_HOOK)
    config = write_tiny_config(tmp_path / 'tiny_resume.py', tiny_data, max_iters=8, interval=2)
    with open(config, 'a') as f:
        f.write(_HOOK_CONFIG)
    work_dir, straight_dir = tmp_path / 'work_dir', tmp_path / 'straight'
    train = [PYTHON, osp.join(TOOLS, 'train.py'), config]
    options = ['--cfg-options', 'model.data_preprocessor.modality_dropout=0.5']
    args = train + ['--work-dir', work_dir] + options
    env = tool_env(PYTHONPATH=tmp_path, **{STALL_ENV: 5})

    output = tmp_path / 'first_run.txt'  # a file, not a pipe that could fill up and block
    with open(output, 'w') as out, open(tmp_path / 'straight_run.txt', 'w') as straight_out:
        # the uninterrupted run, on the other core meanwhile
        straight = subprocess.Popen([str(a) for a in train + ['--work-dir', straight_dir] +
                                     options], cwd=str(tmp_path),
                                    env=tool_env(PYTHONPATH=tmp_path), stdout=straight_out,
                                    stderr=subprocess.STDOUT)
        first = subprocess.Popen([str(a) for a in args], cwd=str(tmp_path), env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
        try:
            stalled = wait_for(lambda: (work_dir / 'stalled').exists(), timeout=180,
                               proc=first)
            if stalled:
                first.send_signal(signal.SIGKILL)
        finally:
            if first.poll() is None:
                first.kill()
            first.wait(timeout=60)
    assert stalled, f'the first run never reached iteration 5 (exit {first.returncode}):\n' \
                    f'{output.read_text()[-4000:]}'
    assert first.returncode == -signal.SIGKILL
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_2.pth', 'iter_4.pth']
    with open(work_dir / 'last_checkpoint') as f:
        assert osp.basename(f.read().strip()) == 'iter_4.pth'
    first_logs = set(work_dir.glob('*/*.log'))
    assert len(first_logs) == 1
    assert _train_iters(first_logs.pop()) == [1, 2, 3, 4, 5]

    proc = run_tool(args + ['--resume'], cwd=tmp_path, env=tool_env(PYTHONPATH=tmp_path))
    assert proc.returncode == 0, describe(proc)
    with open(work_dir / 'last_checkpoint') as f:
        assert osp.basename(f.read().strip()) == 'iter_8.pth'
    ckpt = torch.load(str(work_dir / 'iter_8.pth'), map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 8
    logs = sorted(work_dir.glob('*/*.log'))
    assert len(logs) == 2, logs
    resumed_log = max(logs, key=lambda p: p.stat().st_mtime)
    # the resumed run starts after the checkpointed iteration 4, not from 0 and not from 5
    assert _train_iters(resumed_log) == [5, 6, 7, 8]
    text = resumed_log.read_text()
    assert f'Auto resumed from the latest checkpoint {work_dir / "iter_4.pth"}' in text
    assert 'resumed epoch: 0, iter: 4' in text
    assert 'RNGStateHook: restored the random states of iteration 4' in text

    assert straight.wait(timeout=300) == 0, (tmp_path / 'straight_run.txt').read_text()[-4000:]
    straight_ckpt = torch.load(str(straight_dir / 'iter_8.pth'), map_location='cpu',
                               weights_only=False)
    assert list(ckpt['state_dict']) == list(straight_ckpt['state_dict'])
    differing = [k for k, v in ckpt['state_dict'].items()
                 if not torch.equal(v, straight_ckpt['state_dict'][k])]
    assert differing == [], f'{len(differing)} tensors differ from the uninterrupted run'

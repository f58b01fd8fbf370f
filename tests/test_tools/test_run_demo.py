"""``tools/run_demo.py`` (the main job) and ``tools/profile_train.py`` on the tiny config, in this
process: the console stays short, the estimate, work units, summary and files are there."""
import importlib.util
import json
import os.path as osp

from tiny_config import TOOLS, write_tiny_config


def _tool(name):
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_prints_estimate_progress_summary_and_writes_files(tmp_path, capsys):
    data_root = tmp_path / 'synthetic_deliver'
    config = write_tiny_config(tmp_path / 'tiny_equiseg.py', data_root)
    work_dir = tmp_path / 'work'
    demo = _tool('run_demo')
    demo.main(['--config', config, '--baseline-config', config, '--data-root', str(data_root),
               '--work-dir', str(work_dir), '--max-iters', '2', '--num-panels', '1'])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert '[demo] machine:' in lines[0]
    assert any('estimated total of the job on this machine' in line for line in lines)
    assert any(line.startswith('[equiseg] iter 2/2') for line in lines)
    assert any(line.startswith('[tiny] iter 2/2') for line in lines)  # the baseline's name
    assert any('2 iterations x 2 images of 32x32' in line for line in lines)  # work units
    assert 'EMM average (15 subsets)' in out and 'Total wall time' in out
    assert 'Environment' not in out and 'Config:' not in out  # the dumps went to the log files
    assert len(lines) < 80, out
    summary = json.loads((work_dir / 'summary.json').read_text())
    assert set(summary) >= {'equiseg', 'tiny', 'total_s', 'machine'}
    run = summary['equiseg']
    assert 'mm/mIoU' in run['metrics'] and run['max_iters'] == 2
    assert osp.isfile(osp.join(run['log_dir'], 'robustness_report.md'))
    assert len(list((work_dir / 'equiseg').rglob('vis_modalities/*.png'))) == 1
    assert (work_dir / 'summary.txt').read_text() in out


def test_profile_train_rows_add_up(tmp_path, tiny_data, capsys):
    config = write_tiny_config(tmp_path / 'tiny_profile.py', tiny_data)
    mean = _tool('profile_train').main([config, '--iters', '2', '--warmup', '1'])
    out = capsys.readouterr().out
    for row in ('data', 'backward', 'optimiser', '  backbone', '  neck', 'total'):
        assert row in out
    parts = sum(mean.get(p, 0.0) for p in ('backbone', 'neck', 'decode_head', 'auxiliary_head',
                                           '  losses, SGM, rest'))
    assert mean['backbone'] > 0 and mean['neck'] > 0 and mean['decode_head'] > 0
    assert abs(parts - mean['forward']) < 1e-9
    steps = sum(mean[k] for k in ('data', 'preprocessor', 'forward', 'backward', 'optimiser'))
    assert abs(steps - mean['total']) < 1e-6

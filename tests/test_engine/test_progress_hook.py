"""ProgressHook: one line every interval with the measured speed, ETA and a job estimate."""
import re
from types import SimpleNamespace

import pytest

from equiseg_mm.engine import ProgressHook


def _drive(hook, total, times, capsys, monkeypatch):
    clock = iter(times)
    monkeypatch.setattr('equiseg_mm.engine.progress_hook.time.perf_counter', lambda: next(clock))
    runner = SimpleNamespace(iter=0, max_iters=total)
    hook.before_train(runner)
    for i in range(total):
        runner.iter = i
        hook.after_train_iter(runner, i)
    return capsys.readouterr().out.splitlines()


def test_lines_every_interval_with_speed_and_eta(capsys, monkeypatch):
    hook = ProgressHook(interval=2, name='m', extra_eta=lambda spi: 100 * spi)
    # perf_counter at before_train, then after iterations 2, 4 and 5 (the last one)
    lines = _drive(hook, 5, [0.0, 1.0, 3.0, 4.5], capsys, monkeypatch)
    assert lines == [
        '[m] iter 2/5  0.50 s/it  ETA 0:02  (whole job 0:52)',
        '[m] iter 4/5  1.00 s/it  ETA 0:01  (whole job 1:41)',
        '[m] iter 5/5  1.50 s/it  ETA 0:00  (whole job 2:30)',
    ]


def test_job_estimate_printed_once(capsys, monkeypatch):
    monkeypatch.setattr('equiseg_mm.engine.progress_hook.time.time', lambda: 1010.0)
    hook = ProgressHook(interval=2, name='m', extra_eta=lambda spi: 60.0, job_start=1000.0)
    lines = _drive(hook, 4, [0.0, 2.0, 4.0], capsys, monkeypatch)
    estimates = [line for line in lines if 'estimated total' in line]
    # 10 s elapsed + 2 iterations left at 1 s/it + 60 s of later work = 72 s
    assert estimates == ['[m] estimated total of the job on this machine: 1:12 (min:s; from '
                         'the first 2 iterations)']
    assert sum(bool(re.match(r'\[m\] iter', line)) for line in lines) == 2


def test_bad_interval():
    with pytest.raises(ValueError, match='interval'):
        ProgressHook(interval=0)

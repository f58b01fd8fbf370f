"""One short progress line with speed and ETA, for consoles that hide mmengine's INFO log."""
import time
from typing import Callable, Optional

from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class ProgressHook(Hook):
    """Print ``[name] iter i/N  x.xx s/it  ETA mm:ss`` to stdout every ``interval`` iterations.

    Args:
        interval (int): Iterations between lines. Defaults to 50.
        name (str): Label at the start of each line. Defaults to 'train'.
        extra_eta (callable, optional): Seconds per iteration -> seconds of work after this run;
            adds a whole-job ETA to the line. Defaults to None.
        job_start (float, optional): ``time.time()`` at the start of the job; the first line
            then also prints the job's estimated total duration. Defaults to None.
    """

    priority = 'LOW'

    def __init__(self, interval: int = 50, name: str = 'train',
                 extra_eta: Optional[Callable[[float], float]] = None,
                 job_start: Optional[float] = None) -> None:
        if interval < 1:
            raise ValueError(f'ProgressHook: interval must be >= 1, got {interval}')
        self.interval = interval
        self.name = name
        self.extra_eta = extra_eta
        self.job_start = job_start
        self._mark = None
        self.sec_per_iter = None

    def before_train(self, runner) -> None:
        self._mark = (time.perf_counter(), runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        done, total = runner.iter + 1, runner.max_iters
        if done % self.interval and done != total:
            return
        now = time.perf_counter()
        start, start_iter = self._mark
        if done > start_iter:
            self.sec_per_iter = (now - start) / (done - start_iter)
        self._mark = (now, done)
        if self.sec_per_iter is None:
            return
        eta = (total - done) * self.sec_per_iter
        extra = self.extra_eta(self.sec_per_iter) if self.extra_eta is not None else 0.0
        if self.job_start is not None:
            estimate = time.time() - self.job_start + eta + extra
            print(f'[{self.name}] estimated total of the job on this machine: '
                  f'{_clock(estimate)} (min:s; from the first {done} iterations)', flush=True)
            self.job_start = None
        line = (f'[{self.name}] iter {done}/{total}  {self.sec_per_iter:.2f} s/it  '
                f'ETA {_clock(eta)}')
        if self.extra_eta is not None:
            line += f'  (whole job {_clock(eta + extra)})'
        print(line, flush=True)


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f'{seconds // 60}:{seconds % 60:02d}'

"""Imported first by every script in ``tools/``.

- Opts the process (and every process it starts) in to both compatibility fixes of
  :mod:`equiseg_mm.compat` by setting ``EQUISEG_COMPAT=all`` before ``equiseg_mm`` is imported.
- Silences the warnings in :data:`QUIET_WARNINGS`, which are about the OpenMMLab stack itself,
  not the user's run (they stay in the log files where mmengine writes them). The test suite
  applies the same list.
- :func:`cpu_name` names the machine in the tools' reports.
"""
import os
import platform
import warnings

os.environ['EQUISEG_COMPAT'] = 'all'

QUIET_WARNINGS = (
    'Fail to import ``MultiScaleDeformableAttention``',  # mmcv-lite has no compiled ops
    'The draw is False',  # mmseg's SegVisualizationHook when drawing is off
    '``build_loss`` would be deprecated',
    'Default ``avg_non_ignore`` is False')
for _message in QUIET_WARNINGS:
    warnings.filterwarnings('ignore', message=_message)


def cpu_name() -> str:
    """The CPU model (``lscpu``'s "Model name", family and model) and its widest vector unit."""
    info = {}
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                info.setdefault(key.strip(), value.strip())
                if key.strip() == 'flags':
                    break
    except OSError:
        pass
    name = info.get('model name') or platform.processor() or 'unknown CPU'
    flags = f' {info.get("flags", "")} '
    simd = 'AVX-512' if ' avx512f ' in flags else 'AVX2' if ' avx2 ' in flags else 'no AVX2'
    family = (f'family {info["cpu family"]} model {info["model"]}, '
              if 'cpu family' in info and 'model' in info else '')
    return f'{name} ({family}{simd}, {os.cpu_count()} cores)'

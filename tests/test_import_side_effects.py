"""``import equiseg_mm`` registers the plugin's parts and changes nothing else in the process
unless ``EQUISEG_COMPAT`` asks for the compatibility fixes. Each case runs in a fresh interpreter
without the suite's ``EQUISEG_COMPAT=all``."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
FULL_MMCV = importlib.util.find_spec('mmcv._ext') is not None

# what full mmcv provides: an importable ``mmcv.ops`` with every op
_FAKE_FULL_MMCV = '''
import types
import mmcv
import torch
ops = types.ModuleType('mmcv.ops')
ops.__file__ = mmcv.__file__.replace('__init__.py', 'ops/__init__.py')
def point_sample(input, points, align_corners=False, **kwargs):
    return input
def sigmoid_focal_loss(pred, target, gamma=2.0, alpha=0.25, weight=None, reduction='mean'):
    return pred.sum()
ops.point_sample, ops.sigmoid_focal_loss = point_sample, sigmoid_focal_loss
def __getattr__(name):
    if name.startswith('__'):
        raise AttributeError(name)
    return type(name, (torch.nn.Module, ), {})
ops.__getattr__ = __getattr__
sys.modules['mmcv.ops'] = mmcv.ops = ops
'''


def _run(code, **env):
    env = dict({k: v for k, v in os.environ.items() if k != 'EQUISEG_COMPAT'},
               OMP_NUM_THREADS='1', **env)
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_import_without_opt_in_changes_no_module_and_no_checkpoint_loader():
    proc = _run('import sys\n' + _FAKE_FULL_MMCV + '''
import types
import torch
from mmengine.runner.checkpoint import CheckpointLoader
missing = object()
before = dict(sys.modules)
schemes, items = CheckpointLoader._schemes, list(CheckpointLoader._schemes.items())
safe = list(torch.serialization.get_safe_globals())

import equiseg_mm
from mmseg.registry import MODELS

assert MODELS.get('MultiModalMiT') is not None  # registration happened
changed = [n for n, m in before.items() if sys.modules.get(n, missing) is not m]
assert not changed, changed
stubs = [n for n, m in sys.modules.items()
         if isinstance(m, types.ModuleType) and m.__dict__.get('__equiseg_stub__')]
assert not stubs, stubs
assert sys.modules['mmcv'].ops is ops
assert CheckpointLoader._schemes is schemes and list(schemes.items()) == items
assert list(torch.serialization.get_safe_globals()) == safe
# the in-process opt-in for the loader
assert equiseg_mm.compat.enable('checkpoint_loader') == {'checkpoint_loader': True}
assert CheckpointLoader._schemes[''] is equiseg_mm.compat._load_local_checkpoint
''')
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_import_with_opt_in_applies_both_fixes():
    proc = _run('''
import sys
from mmengine.runner.checkpoint import CheckpointLoader
stock = CheckpointLoader._schemes['']

import equiseg_mm
import mmseg.models  # noqa: F401

ops = sys.modules['mmcv.ops']
assert getattr(ops, '__equiseg_stub__', False) is (not FULL_MMCV), ops
loader = CheckpointLoader._schemes['']
assert loader is not stock and loader is equiseg_mm.compat._load_local_checkpoint
'''.replace('FULL_MMCV', repr(FULL_MMCV)), EQUISEG_COMPAT='all')
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(FULL_MMCV, reason='full mmcv with compiled ops is installed')
def test_import_under_mmcv_lite_without_opt_in_names_both_fixes():
    proc = _run('import equiseg_mm')
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('ImportError: ') and 'full mmcv<2.2.0' in last, proc.stderr[-3000:]
    assert 'EQUISEG_COMPAT=mmcv_ops' in last
    assert "No module named 'mmcv._ext'" not in proc.stderr


def test_every_tool_opts_in_before_it_imports_equiseg_mm():
    """The scripts in ``tools/`` import ``tools/_common.py`` (``EQUISEG_COMPAT=all``) first."""
    import glob
    tools = [p for p in glob.glob(osp.join(ROOT, 'tools', '**', '*.py'), recursive=True)
             if not osp.basename(p).startswith('_')]
    checked = 0
    for path in tools:
        with open(path) as f:
            text = f.read()
        found = [text.index(s) for s in ('import equiseg_mm', 'from equiseg_mm') if s in text]
        if found:
            assert '_common' in text[:min(found)], path
            checked += 1
    assert checked >= 10, tools

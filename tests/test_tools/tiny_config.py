"""A tiny EQUISeg config and dataset for the command-line tool tests.

``write_tiny_config`` writes a leaf config that inherits the README's synthetic config and shrinks
everything that costs time: 48x64 frames, 32x32 crops, 8-channel MiT stages with one layer and
one head each, a 16-channel decode head, a few iterations, and a robustness loop limited to two
single-modality subsets. The tools run it in subprocesses, as a user would.
"""
import os
import os.path as osp
import socket
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BASE_CONFIG = osp.join(ROOT, 'configs', 'equiseg',
                       'equiseg_mit-b0_1xb8-1k_synthetic-rgbdel-96x96.py')
TOOLS = osp.join(ROOT, 'tools')
PYTHON = sys.executable
BIN_DIR = osp.dirname(PYTHON)

_TEMPLATE = '''\
_base_ = [{base!r}]
data_root = {data_root!r}
crop_size = (32, 32)
dims = [8, 8, 8, 8]
heads = [1, 1, 1, 1]
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(embed_dims=8, num_layers=[1, 1, 1, 1], num_heads=heads),
    neck=dict(in_channels=dims, num_heads=heads),
    decode_head=dict(in_channels=dims, channels=16),
    auxiliary_head=dict(in_channels=dims))
train_pipeline = [
    dict(type='LoadMultiModalImageFromFiles'),
    dict(type='LoadMultiModalAnnotations'),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs', meta_keys={{{{_base_.meta_keys}}}}),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root))
test_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root))
train_cfg = dict(max_iters={max_iters}, val_interval={val_interval})
test_cfg = dict(type='MissingModalityTestLoop', subsets=[['rgb'], ['depth']])
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval={interval}, max_keep_ckpts=-1),
    visualization=dict(draw=False))
'''


def make_tiny_data(root):
    """Write the tiny synthetic DeLiVER-layout dataset (8 train, 4 val, 4 test, 48x64)."""
    from _synthetic_deliver import make_synthetic_deliver
    make_synthetic_deliver(str(root), num_train=8, num_val=4, num_test=4, size=(48, 64))
    return str(root)


def write_tiny_config(path, data_root, max_iters=4, interval=2, val_interval=None):
    """Write the tiny config to ``path`` and return it as a string.

    Args:
        path (str | Path): Where to write the ``.py`` config.
        data_root (str): The tiny dataset (see :func:`make_tiny_data`).
        max_iters (int): Training iterations. Defaults to 4.
        interval (int): Checkpoint interval. Defaults to 2.
        val_interval (int, optional): Validation interval; None validates once at the end.
            Defaults to None.
    """
    text = _TEMPLATE.format(base=BASE_CONFIG, data_root=str(data_root), max_iters=max_iters,
                            interval=interval, val_interval=val_interval or max_iters)
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def tool_env(**extra):
    """The environment of a tool subprocess: the venv first on PATH, one thread per process.

    A ``PYTHONPATH`` in ``extra`` goes before the inherited one (which may name the checkout
    under test), not instead of it.
    """
    env = dict(os.environ)
    env['PATH'] = BIN_DIR + os.pathsep + env.get('PATH', '')
    env['OMP_NUM_THREADS'] = '1'
    env['MKL_NUM_THREADS'] = '1'
    env['PYTHONUNBUFFERED'] = '1'
    env.pop('LOCAL_RANK', None)
    extra = {k: str(v) for k, v in extra.items()}
    if extra.get('PYTHONPATH') and env.get('PYTHONPATH'):
        extra['PYTHONPATH'] += os.pathsep + env['PYTHONPATH']
    env.update(extra)
    return env


def run_tool(args, cwd, timeout=300, env=None):
    """Run a command to completion; returns the CompletedProcess (stdout and stderr as text)."""
    return subprocess.run([str(a) for a in args], cwd=str(cwd), env=env or tool_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout)


_TOOL_MODULES = {}


def run_tool_main(name, args, monkeypatch, capsys):
    """Run ``tools/<name>.py``'s ``main()`` in this process with ``sys.argv`` set to ``args``.

    For a tool's argument and file checks, which fail before any work: the same code as the
    command line, without a subprocess that would spend seconds importing torch.

    Returns:
        tuple: (exit status, stdout, stderr); a ``SystemExit`` (argparse) gives its code.
    """
    import importlib.util
    import sys
    module = _TOOL_MODULES.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(f'_tool_{name}',
                                                      os.path.join(TOOLS, f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _TOOL_MODULES[name] = module
    monkeypatch.setattr(sys, 'argv', [f'{name}.py'] + [str(a) for a in args])
    try:
        code = module.main()
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def describe(proc):
    """The tail of a finished process's output, for assertion messages."""
    return (f'exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n'
            f'--- stderr ---\n{proc.stderr[-4000:]}')


def free_port():
    """A TCP port that was free a moment ago (for torchrun's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, proc=None, step=0.2):
    """Poll ``predicate`` until it is true; False on timeout or when ``proc`` has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return bool(predicate())
        time.sleep(step)
    return False

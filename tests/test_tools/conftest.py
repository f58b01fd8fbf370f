"""Fixtures shared by the command-line tool tests: one tiny dataset, one tiny config and one
trained checkpoint per test session (the writers live in ``tiny_config.py``)."""
import os.path as osp
from types import SimpleNamespace

import pytest
from tiny_config import PYTHON, TOOLS, make_tiny_data, run_tool, write_tiny_config


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """The tiny synthetic DeLiVER-layout dataset (8 train, 4 val, 4 test frames of 48x64)."""
    return make_tiny_data(tmp_path_factory.mktemp('tiny_data') / 'synthetic_deliver')


@pytest.fixture(scope='session')
def tiny_config(tmp_path_factory, tiny_data):
    """The tiny config: 4 iterations, a checkpoint every 2, validation at the end."""
    return write_tiny_config(tmp_path_factory.mktemp('tiny_config') / 'tiny_equiseg.py',
                             tiny_data)


@pytest.fixture(scope='session')
def trained(tmp_path_factory, tiny_config):
    """One ``tools/train.py`` run of the tiny config, shared by the tests that need weights.

    ``--cfg-options default_hooks.checkpoint.max_keep_ckpts=1`` keeps only the newest checkpoint,
    which lets the tests see that the option reached the runner (the config keeps all);
    ``model.data_preprocessor.modality_dropout=0.5`` makes the same run the check that training
    with dead sensors keeps its losses finite (issue 12).
    """
    root = tmp_path_factory.mktemp('trained')
    work_dir = root / 'work_dir'
    args = [PYTHON, osp.join(TOOLS, 'train.py'), tiny_config, '--work-dir', work_dir,
            '--cfg-options', 'default_hooks.checkpoint.max_keep_ckpts=1',
            'model.data_preprocessor.modality_dropout=0.5']
    proc = run_tool(args, cwd=root)
    return SimpleNamespace(proc=proc, config=tiny_config, work_dir=work_dir, args=args,
                           checkpoint=work_dir / 'iter_4.pth', cwd=root)

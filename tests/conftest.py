"""The suite's process setup, and every test in mmseg's default scope.

The suite opts in to both compatibility fixes of :mod:`equiseg_mm.compat` as the tools do
(``EQUISEG_COMPAT=all`` in ``os.environ``, so tool subprocesses inherit it), puts ``tools/`` on
``sys.path`` (the tools' private modules, as when a tool runs) and applies the tools' list of
quiet warnings.
"""
import os
import os.path as osp
import sys

import pytest
from mmengine.registry import DefaultScope

os.environ['EQUISEG_COMPAT'] = 'all'
sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools'))

from _common import QUIET_WARNINGS  # noqa: E402,I001  (also quiets the imports below)
import equiseg_mm  # noqa: E402,F401  (the fixes and registration before any test module)


def pytest_configure(config):
    config.addinivalue_line('filterwarnings', 'ignore::DeprecationWarning')
    for message in QUIET_WARNINGS:
        config.addinivalue_line('filterwarnings', f'ignore:{message}:UserWarning')


@pytest.fixture(autouse=True)
def _mmseg_default_scope():
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield

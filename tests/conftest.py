"""Every test starts in mmseg's default scope, whatever an earlier test's Runner left behind."""
import pytest
from mmengine.registry import DefaultScope

import equiseg_mm  # noqa: F401  (compat fixes and registration before any test module runs)


@pytest.fixture(autouse=True)
def _mmseg_default_scope():
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield

"""Fixtures for the dataset tests; the writers live in ``multimodal_fixtures.py``."""
import pytest
from mmengine.registry import init_default_scope
from multimodal_fixtures import make_deliver, make_muses


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Pipelines name transforms by string, as configs do with ``default_scope='mmseg'``."""
    init_default_scope('mmseg')


@pytest.fixture
def deliver_root(tmp_path):
    """A DeLiVER tree with the samples of ``DELIVER_SAMPLES``."""
    return make_deliver(tmp_path)


@pytest.fixture
def muses_root(tmp_path):
    """A MUSES tree with the samples of ``MUSES_SAMPLES``."""
    return make_muses(tmp_path)

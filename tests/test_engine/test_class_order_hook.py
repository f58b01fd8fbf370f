"""ClassOrderHook: a checkpoint trained on other classes than the data is an error."""
from types import SimpleNamespace
from unittest import mock

import pytest
from mmengine.config import Config

import equiseg_mm  # noqa: F401
from equiseg_mm.engine import ClassOrderHook

CLASSES = ('road', 'car', 'person')


def _runner(classes):
    dataset = SimpleNamespace(metainfo=dict(classes=classes))
    return SimpleNamespace(_test_loop=SimpleNamespace(dataloader=SimpleNamespace(dataset=dataset)),
                           logger=mock.Mock())


def _ckpt(classes):
    return dict(meta=dict(dataset_meta=dict(classes=classes)), state_dict={})


@pytest.mark.parametrize('saved, match', [
    (('car', 'road', 'person'), r"differ at 0: 'car' vs 'road', 1: 'road' vs 'car'"),
    (CLASSES + ('bike', ), 'trained on 4 classes, the data has 3'),
])
def test_other_classes_are_an_error_naming_the_difference(saved, match):
    with pytest.raises(ValueError, match=match):
        ClassOrderHook().after_load_checkpoint(_runner(CLASSES), _ckpt(saved))
    runner = _runner(CLASSES)
    ClassOrderHook(allow_other_classes=True).after_load_checkpoint(runner, _ckpt(saved))
    assert 'allow_other_classes' in runner.logger.warning.call_args[0][0]


def test_same_classes_or_no_record_pass():
    hook = ClassOrderHook()
    hook.after_load_checkpoint(_runner(CLASSES), _ckpt(list(CLASSES)))
    hook.after_load_checkpoint(_runner(CLASSES), dict(meta={}, state_dict={}))
    hook.after_load_checkpoint(SimpleNamespace(_test_loop=dict(type='TestLoop')), _ckpt(CLASSES))


def test_the_shipped_runtime_uses_it():
    import os.path as osp
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(root, 'configs', '_base_', 'default_runtime.py'))
    assert dict(type='ClassOrderHook') in cfg.custom_hooks

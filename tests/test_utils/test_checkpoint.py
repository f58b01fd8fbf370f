"""Checkpoint loading keeps ``weights_only=True``: mmengine's own types load, nothing else runs.

mmengine's ``CheckpointLoader`` goes through the safe loader because the suite opts in
(``EQUISEG_COMPAT=all``); ``load_checkpoint`` (the inference API's) does without the opt-in."""
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from equiseg_mm.utils.checkpoint import (TRUST_ENV, UntrustedCheckpointError, is_trusted,
                                         load_checkpoint, load_checkpoint_file)


class _WritesAFile:
    """Unpickling this object calls ``open(path, 'w')``: code run by a checkpoint."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, 'w')


class _GetattrEscape:
    """Unpickles as ``getattr(HistoryBuffer, '__init__')``: a lookup outside the allowed one."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


def _mmengine_like_checkpoint():
    buffer = HistoryBuffer()
    buffer.update(0.5)
    buffer.update(np.float64(0.25))
    return dict(meta=dict(seed=np.int64(3), hist=np.arange(4, dtype=np.float32)),
                state_dict={'w': torch.arange(3.0)},
                message_hub=dict(log_scalars={'train/loss': buffer}))


@pytest.fixture
def no_trust(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)


def test_mmengine_types_load_with_weights_only(tmp_path, no_trust):
    path = tmp_path / 'ok.pth'
    torch.save(_mmengine_like_checkpoint(), path)
    with pytest.raises(pickle.UnpicklingError):  # plain torch refuses the message hub ...
        torch.load(path, weights_only=True)
    loaded = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')  # ... we do not
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.min() == 0.25 and buffer.current() == 0.25 and buffer.mean() == 0.375
    np.testing.assert_array_equal(loaded['meta']['hist'], np.arange(4, dtype=np.float32))
    assert loaded['meta']['seed'] == 3
    torch.testing.assert_close(loaded['state_dict']['w'], torch.arange(3.0))


def test_a_checkpoint_that_runs_code_is_refused_and_runs_nothing(tmp_path, no_trust):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'payload': _WritesAFile(marker)}, path)
    assert not marker.exists()  # saving did not run it
    with pytest.raises(UntrustedCheckpointError) as info:
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert not marker.exists()
    message = str(info.value)
    assert 'io.open' in message and TRUST_ENV in message and str(path) in message
    # mmengine's public entry point goes through the same loader
    from mmengine.runner import load_checkpoint
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint(torch.nn.Linear(1, 1), str(path), map_location='cpu')
    assert not marker.exists()


def test_getattr_is_allowed_only_for_history_buffer_statistics(tmp_path, no_trust):
    path = tmp_path / 'escape.pth'
    torch.save({'x': _GetattrEscape()}, path)
    with pytest.raises(UntrustedCheckpointError, match='HistoryBuffer statistics'):
        load_checkpoint_file(str(path))


def test_trusted_opt_in_by_environment(tmp_path, monkeypatch):
    marker = tmp_path / 'ran'
    path = tmp_path / 'sub' / 'trusted.pth'
    path.parent.mkdir()
    torch.save({'payload': _WritesAFile(marker)}, path)
    monkeypatch.setenv(TRUST_ENV, os.pathsep.join(['/nonexistent', str(tmp_path / 'other')]))
    assert not is_trusted(str(path))
    monkeypatch.setenv(TRUST_ENV, os.pathsep.join(['/nonexistent', str(tmp_path)]))  # a folder
    assert is_trusted(str(path))
    assert not is_trusted(str(tmp_path) + '-sibling/trusted.pth')  # a prefix is not a folder
    CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert marker.exists()  # the opt-in really unpickles fully


def test_missing_file_names_the_path(tmp_path, no_trust):
    with pytest.raises(FileNotFoundError, match='nothere.pth'):
        load_checkpoint_file(str(tmp_path / 'nothere.pth'))


def test_load_checkpoint_into_a_model_without_the_opt_in(tmp_path, no_trust, monkeypatch):
    from mmengine.runner.checkpoint import load_from_local
    monkeypatch.setitem(CheckpointLoader._schemes, '', load_from_local)  # mmengine's own
    path, evil, marker = tmp_path / 'ok.pth', tmp_path / 'evil.pth', tmp_path / 'pwned'
    checkpoint = _mmengine_like_checkpoint()
    checkpoint['state_dict'] = {'module.weight': torch.ones(1, 2), 'module.bias': torch.zeros(1)}
    torch.save(checkpoint, path)
    with pytest.raises(pickle.UnpicklingError):  # the stock loader refuses the message hub
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    model = torch.nn.Linear(2, 1)
    loaded = load_checkpoint(model, str(path), map_location='cpu')
    assert isinstance(loaded['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    torch.testing.assert_close(model.weight.data, torch.ones(1, 2))  # 'module.' stripped
    torch.save({'state_dict': {}, 'payload': _WritesAFile(marker)}, evil)
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint(model, str(evil))
    assert not marker.exists()


@pytest.mark.parametrize('trusted', [None, True])
@pytest.mark.parametrize('cut', [0.5, 0.0])
def test_a_truncated_checkpoint_names_the_file(tmp_path, trusted, cut):
    path = tmp_path / 'iter_8.pth'
    torch.save({'state_dict': {'w': torch.zeros(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(RuntimeError, match=r'checkpoint .*iter_8\.pth cannot be read: it is '
                                           r'truncated'):
        load_checkpoint_file(str(path), trusted=trusted)

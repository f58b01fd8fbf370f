"""SGMHead: the prototype-relation KL, its masking, pairing draws and its training-only role."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData

import equiseg_mm  # noqa: F401  (compat fixes before mmseg.models)
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from equiseg_mm.models.heads import SGMHead

DIMS = [4, 6]
SIZES = [(8, 12), (4, 6)]


def _samples(labels):
    out = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None].long())
        out.append(sample)
    return out


def _labels(batch=2, h=32, w=48, num_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_classes, (batch, h, w), generator=g)


def _inputs(n, batch=2, seed=0, requires_grad=False):
    """Neck-like outputs: 2 fused maps (unused) and 2 per-modality stacks."""
    g = torch.Generator().manual_seed(seed)
    stacks = [torch.randn(batch, n, c, h, w, generator=g).requires_grad_(requires_grad)
              for c, (h, w) in zip(DIMS, SIZES)]
    fused = [s.detach().sum(1) for s in stacks]
    return fused + stacks


def _head(**kwargs):
    kwargs.setdefault('num_classes', 4)
    return SGMHead(in_channels=DIMS, in_index=[2, 3], **kwargs)


def _reference(stacks, labels, pairing, tau, num_classes, ignore_index=255, weight=1.0):
    """Direct transcription of the documented formula, with loops."""
    total = 0.
    for feat in stacks:
        b, n, c, h, w = feat.shape
        lab = F.interpolate(labels[:, None].float(), size=(h, w), mode='nearest')[:, 0].long()
        classes = [k for k in range(num_classes) if (lab == k).any()]
        if not classes:
            continue
        protos = []
        for m in range(n):
            f = feat[:, m].permute(0, 2, 3, 1)  # (B, h, w, C)
            protos.append(torch.stack([f[lab == k].mean(0) for k in classes]))
        stage = 0.
        for s in range(n):
            t = F.normalize(protos[pairing[s]], dim=-1).detach()
            p = F.normalize(protos[s], dim=-1)
            for ci in range(len(classes)):
                q = torch.softmax(t[ci] @ t.T / tau, -1)
                r = torch.softmax(p[ci] @ t.T / tau, -1)
                stage = stage + (q * (q.log() - r.log())).sum() / len(classes)
        total = total + stage / n
    return weight * total / len(stacks)


@pytest.mark.parametrize('n', [2, 3, 4])
def test_loss_matches_reference_formula_and_gradients(n):
    head = _head(temperature=0.5, loss_weight=0.7, seed=3)
    labels = _labels()
    labels[0, :8] = 255
    inputs = _inputs(n, requires_grad=True)
    loss = head.loss(inputs, _samples(labels), None)['loss_sgm']
    assert loss > 0
    grads = torch.autograd.grad(loss, inputs[2:])
    ref = _reference(inputs[2:], labels, head.last_pairing, 0.5, 4, weight=0.7)
    ref_grads = torch.autograd.grad(ref, inputs[2:])  # the reference detaches the teacher
    assert torch.allclose(loss, ref, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_zero_when_student_equals_teacher():
    head = _head(seed=0)
    one = torch.randn(2, 1, 4, 8, 12), torch.randn(2, 1, 6, 4, 6)
    stacks = [x.repeat(1, 3, 1, 1, 1) for x in one]  # every modality has the same features
    loss = head.loss([s.sum(1) for s in stacks] + stacks, _samples(_labels()), None)
    assert loss['loss_sgm'].abs() < 1e-6


def test_ignore_index_pixels_do_not_count():
    head = _head(seed=0)
    labels = _labels(h=8, w=12)  # label size = the first stage's feature size
    labels[:, :, :6] = 255
    inputs = _inputs(3)
    a = head.loss(inputs, _samples(labels), None)['loss_sgm']
    changed = [x.clone() for x in inputs]
    changed[2][:, :, :, :, :6] = torch.randn_like(changed[2][:, :, :, :, :6]) * 100
    changed[3][:, :, :, :, :3] = torch.randn_like(changed[3][:, :, :, :, :3]) * 100
    head2 = _head(seed=0)
    b = head2.loss(changed, _samples(labels), None)['loss_sgm']
    assert torch.allclose(a, b, atol=1e-6)


def test_absent_classes_do_not_count():
    labels = _labels(num_classes=3)  # classes 0..2 only
    inputs = _inputs(3)
    small = _head(num_classes=3, seed=5).loss(inputs, _samples(labels), None)['loss_sgm']
    large = _head(num_classes=40, seed=5).loss(inputs, _samples(labels), None)['loss_sgm']
    assert torch.allclose(small, large, atol=1e-6)


def test_all_ignored_or_single_modality_gives_zero():
    head = _head(seed=0)
    labels = torch.full((2, 32, 48), 255)
    assert head.loss(_inputs(3), _samples(labels), None)['loss_sgm'] == 0
    assert head.loss(_inputs(1), _samples(_labels()), None)['loss_sgm'] == 0
    assert head.last_pairing == (0,)


def test_derangement_has_no_fixed_points_and_varies():
    head = _head(seed=0)
    for n in [2, 3, 4, 5]:
        draws = [tuple(head.draw_pairing(n)) for _ in range(40)]
        assert all(sorted(d) == list(range(n)) for d in draws)
        assert all(all(t != s for s, t in enumerate(d)) for d in draws)
        if n > 2:
            assert len(set(draws)) > 1  # the pairing changes across iterations


def test_permutation_allows_fixed_points():
    head = _head(pairing='permutation', seed=0)
    draws = [head.draw_pairing(3) for _ in range(60)]
    assert any(any(t == s for s, t in enumerate(d)) for d in draws)


def test_seed_makes_pairings_reproducible():
    labels, inputs = _labels(), _inputs(4)
    a, b, c = _head(seed=7), _head(seed=7), _head(seed=8)
    seq_a, seq_b, seq_c, losses_a, losses_b = [], [], [], [], []
    for _ in range(10):
        losses_a.append(a.loss(inputs, _samples(labels), None)['loss_sgm'])
        losses_b.append(b.loss(inputs, _samples(labels), None)['loss_sgm'])
        c.loss(inputs, _samples(labels), None)
        seq_a.append(a.last_pairing)
        seq_b.append(b.last_pairing)
        seq_c.append(c.last_pairing)
    assert seq_a == seq_b and torch.equal(torch.stack(losses_a), torch.stack(losses_b))
    assert len(set(seq_a)) > 1
    assert seq_a != seq_c


def test_rng_state_dict_continues_the_pairings():
    head = _head(seed=7)
    for _ in range(3):
        head.draw_pairing(4)
    state = head.rng_state_dict()
    assert set(state) == {'generator'} and state['generator'].dtype == torch.uint8
    expected = [tuple(head.draw_pairing(4)) for _ in range(6)]
    fresh = _head(seed=7)  # what a resumed run builds
    fresh.load_rng_state_dict(state)
    assert [tuple(fresh.draw_pairing(4)) for _ in range(6)] == expected
    # seed=None: nothing of its own (torch's global generator draws the pairings)
    assert _head().rng_state_dict() == {}
    _head().load_rng_state_dict(state)  # ignored, not an error


def test_global_rng_when_seed_is_none():
    head = _head()
    torch.manual_seed(11)
    first = [tuple(head.draw_pairing(4)) for _ in range(5)]
    torch.manual_seed(11)
    assert [tuple(head.draw_pairing(4)) for _ in range(5)] == first


def test_training_only_and_parameter_free():
    head = MODELS.build(dict(type='SGMHead', num_classes=4))
    assert head.in_index == [-4, -3, -2, -1]  # the last 4 entries: a neck's stacks
    assert not hasattr(head, 'conv_seg')
    assert len(list(head.parameters())) == 0
    inputs = _inputs(2)
    assert all(a is b for a, b in zip(_head().forward(inputs), inputs[2:]))
    with pytest.raises(RuntimeError, match='training-only'):
        _head().predict(inputs, [{}], None)


def test_input_must_be_a_per_modality_stack():
    inputs = _inputs(2)
    with pytest.raises(ValueError, match='per-modality stack'):
        SGMHead(in_channels=DIMS, in_index=[0, 1], num_classes=4).loss(
            inputs, _samples(_labels()), None)


@pytest.mark.parametrize('kwargs, match', [
    (dict(in_channels=[4, 6], in_index=[2]), 'in_index'),
    (dict(temperature=0), 'temperature'),
    (dict(loss_weight=-1), 'loss_weight'),
    (dict(pairing='random'), 'pairing'),
    (dict(seed='0'), 'seed'),
    (dict(loss_name='sgm'), 'loss_name'),
    (dict(num_classes=0), 'num_classes'),
])
def test_bad_arguments_raise(kwargs, match):
    cfg = dict(in_channels=DIMS, in_index=[2, 3], num_classes=4)
    cfg.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SGMHead(**cfg)


def test_loss_stays_fp32_under_fp16_autocast():
    # 2 x 160 x 160 pixels of one class: the per-class sums overflow fp16 (65504)
    head = SGMHead(in_channels=[8], in_index=[1], num_classes=2, seed=0)
    g = torch.Generator().manual_seed(0)
    stack = 4 + torch.randn(2, 2, 8, 160, 160, generator=g)
    inputs = [stack.sum(1), stack]
    labels = _samples([torch.zeros(160, 160, dtype=torch.long)] * 2)
    labels[0].gt_sem_seg.data[:, :10] = 1
    fp32 = head.loss(inputs, labels, None)['loss_sgm']
    head = SGMHead(in_channels=[8], in_index=[1], num_classes=2, seed=0)
    with torch.autocast('cpu', dtype=torch.float16):
        amp = head.loss(inputs, labels, None)['loss_sgm']
    assert torch.isfinite(amp) and amp.dtype == torch.float32
    torch.testing.assert_close(amp, fp32)


def test_missing_stacks_name_the_neck_setting():
    head = _head()
    with pytest.raises(ValueError, match='outputs'):
        head.loss(_inputs(3)[:2], _samples(_labels()), None)
    inputs = _inputs(3)
    with pytest.raises(ValueError, match='input 3 is None.*training mode'):
        head.loss(inputs[:3] + [None], _samples(_labels()), None)


def test_default_reads_the_last_entries():
    inputs = _inputs(3)  # two fused maps, then two stacks
    head = SGMHead(in_channels=DIMS, num_classes=4, seed=0)
    assert head.in_index == [-2, -1]
    assert all(a is b for a, b in zip(head.forward(inputs), inputs[2:]))
    explicit = SGMHead(in_channels=DIMS, in_index=[2, 3], num_classes=4, seed=0)
    labels = _samples(_labels())
    assert torch.equal(head.loss(inputs, labels, None)['loss_sgm'],
                       explicit.loss(inputs, labels, None)['loss_sgm'])

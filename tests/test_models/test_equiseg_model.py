"""EQUISeg assembled from stock mmseg parts: EncoderDecoder + MultiModalMiT + CMTBNeck +
SegformerHead + SGMHead, in the loss, predict and tensor modes."""
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import equiseg_mm  # noqa: F401  (compat fixes before mmseg.models)
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

DIMS = [8, 16, 16, 32]
HEADS = [1, 2, 2, 4]
NUM_CLASSES = 5


@pytest.fixture(autouse=True)
def mmseg_scope():
    """The data preprocessor is named by string, as configs do with ``default_scope='mmseg'``."""
    init_default_scope('mmseg')


def _model_cfg(channels, num_modalities=None):
    return ConfigDict(
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[120.] * sum(channels), std=[60.] * sum(channels),
            bgr_to_rgb=False, pad_val=0, seg_pad_val=255, size=(64, 96)),
        backbone=dict(type='MultiModalMiT', modalities=[f'm{i}' for i in range(len(channels))],
                      in_channels=channels, embed_dims=8, num_layers=[1, 1, 1, 1],
                      num_heads=HEADS),
        neck=dict(type='CMTBNeck', in_channels=DIMS, num_heads=HEADS,
                  num_modalities=num_modalities),
        decode_head=dict(type='SegformerHead', in_channels=DIMS, in_index=[0, 1, 2, 3],
                         channels=16, num_classes=NUM_CLASSES, dropout_ratio=0.1,
                         norm_cfg=dict(type='BN', requires_grad=True), align_corners=False),
        auxiliary_head=dict(type='SGMHead', in_channels=DIMS, in_index=[4, 5, 6, 7],
                            num_classes=NUM_CLASSES, loss_weight=0.5, seed=0),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))


def _batch(channels, h=64, w=96, batch=2):
    torch.manual_seed(0)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (sum(channels), h, w), dtype=torch.uint8))
        label = torch.randint(0, NUM_CLASSES, (1, h, w))
        label[:, :4] = 255
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _build(channels, num_modalities=None):
    model = MODELS.build(_model_cfg(channels, num_modalities))
    model.init_weights()
    return model


@pytest.mark.parametrize('channels', [[3], [3, 1], [3, 3, 3], [3, 1, 3, 3], [3, 1, 1, 3, 2]])
def test_tensor_and_predict_modes(channels):
    model = _build(channels).eval()
    data = model.data_preprocessor(_batch(channels), training=False)
    with torch.no_grad():
        logits = model(**data, mode='tensor')
        preds = model(**data, mode='predict')
    assert logits.shape == (2, NUM_CLASSES, 16, 24)
    assert len(preds) == 2 and preds[0].pred_sem_seg.data.shape == (1, 64, 96)
    assert torch.isfinite(preds[0].seg_logits.data).all()


@pytest.mark.parametrize('channels, num_modalities', [([3, 1, 3], None), ([3], 1)])
def test_one_training_step_reaches_every_parameter(channels, num_modalities):
    model = _build(channels, num_modalities).train()
    data = model.data_preprocessor(_batch(channels), training=True)
    losses = model(**data, mode='loss')
    assert {'decode.loss_ce', 'decode.acc_seg', 'aux.loss_sgm'} <= set(losses)
    if len(channels) > 1:
        assert losses['aux.loss_sgm'] > 0
    else:
        assert losses['aux.loss_sgm'] == 0  # one modality: no teacher
    total, _ = model.parse_losses(losses)
    total.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f'{name} got no gradient'
            assert torch.isfinite(p.grad).all(), name


def test_sgm_loss_reaches_backbone_and_neck():
    channels = [3, 1, 3]
    model = _build(channels).train()
    data = model.data_preprocessor(_batch(channels), training=True)
    losses = model(**data, mode='loss')
    losses['aux.loss_sgm'].backward()
    for part in (model.backbone, model.neck):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.decode_head.parameters())


def test_zeroed_modalities_give_finite_outputs():
    channels = [3, 1, 3, 3]
    model = _build(channels).eval()
    data = model.data_preprocessor(_batch(channels), training=False)
    inputs = data['inputs'].clone()
    inputs[:, 3:] = 0  # every modality but the first missing, zeroed after normalisation
    with torch.no_grad():
        logits = model(inputs, data['data_samples'], mode='tensor')
        all_zero = model(torch.zeros_like(inputs), data['data_samples'], mode='tensor')
    assert torch.isfinite(logits).all() and torch.isfinite(all_zero).all()

"""Self-Guided Module (SGM) of EQUISeg: a training-only head of mutual prototype guidance."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList

_PAIRINGS = ('derangement', 'permutation')


@MODELS.register_module()
class SGMHead(BaseDecodeHead):
    """Self-Guided Module: modalities teach each other through class-prototype relations.

    The inputs at ``in_index`` are per-modality stacks (B, N, C, h, w). Per stage and modality
    m, the prototype of each of the K classes present is the average of f^m over the batch's
    pixels of that class (ground truth resized with nearest). Each call draws one pairing pi
    (student m, teacher pi(m)) for all stages; with P^m the L2-normalised prototypes and
    t = P^{pi(m)} detached::

        q_c   = softmax_j(<t_c, t_j> / tau)           (teacher's relation of class c to all)
        r_c   = softmax_j(<P^m_c, t_j> / tau)         (student's class c against the same anchors)
        L_sgm = loss_weight * 1/S sum_stages 1/N sum_m 1/K sum_c KL(q_c || r_c)

    The loss is 0 for equal features, fewer than two present classes, and N = 1. Cosine
    similarities and teacher prototypes as anchors are a paper-silent choice.

    Args:
        in_channels (Sequence[int]): Channels of the used inputs. Defaults to (32, 64, 160, 256).
        in_index (Sequence[int], optional): Inputs to use, one per channel count. Defaults to
            None: the last ``len(in_channels)``.
        num_classes (int): Number of classes.
        temperature (float): Softmax temperature tau. Defaults to 0.1 (paper silent).
        loss_weight (float): Weight of the loss. Defaults to 1.0.
        pairing (str): 'derangement' (no self-teacher) or 'permutation'. Defaults to 'derangement'.
        seed (int, optional): Seed of a private pairing generator (None: torch's global one).
            Defaults to None.
        ignore_index (int): Label ignored when pooling. Defaults to 255.
        loss_name (str): Loss key; must start with ``loss_``. Defaults to 'loss_sgm'.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
        **kwargs: Further :class:`BaseDecodeHead` arguments.
    """

    def __init__(self,
                 in_channels: Sequence[int] = (32, 64, 160, 256),
                 in_index: Optional[Sequence[int]] = None,
                 *,
                 num_classes: int,
                 temperature: float = 0.1,
                 loss_weight: float = 1.0,
                 pairing: str = 'derangement',
                 seed: Optional[int] = None,
                 ignore_index: int = 255,
                 loss_name: str = 'loss_sgm',
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        if in_index is None and not isinstance(in_channels, int):
            in_index = list(range(-len(in_channels), 0))
        if isinstance(in_channels, int) or isinstance(in_index, int) or \
                len(in_channels) != len(in_index) or len(in_index) == 0:
            raise ValueError(f'in_channels and in_index must be equally long non-empty lists, '
                             f'got {in_channels!r} and {in_index!r}')
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f'temperature must be > 0, got {temperature!r}')
        if not (isinstance(loss_weight, (int, float)) and loss_weight >= 0):
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight!r}')
        if pairing not in _PAIRINGS:
            raise ValueError(f'pairing must be one of {_PAIRINGS}, got {pairing!r}')
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f'seed must be None or an int, got {seed!r}')
        if not isinstance(loss_name, str) or not loss_name.startswith('loss_'):
            raise ValueError(f"loss_name must start with 'loss_', got {loss_name!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be an int >= 1, got {num_classes!r}')
        kwargs.setdefault('channels', max(in_channels))
        kwargs.setdefault('dropout_ratio', 0.)
        kwargs.setdefault('loss_decode', [])  # the SGM computes its own loss
        super().__init__(
            list(in_channels), input_transform='multiple_select', in_index=list(in_index),
            num_classes=num_classes, ignore_index=ignore_index, init_cfg=init_cfg, **kwargs)
        del self.conv_seg  # no logits: every parameter of the model keeps a gradient
        self.dropout = None
        self.temperature = float(temperature)
        self.loss_weight = float(loss_weight)
        self.pairing = pairing
        self.seed = seed
        self.loss_name = loss_name
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.last_pairing: Optional[Tuple[int, ...]] = None

    def rng_state_dict(self) -> dict:
        """The private pairing generator's state, for ``RNGStateHook``.

        Returns:
            dict: ``generator`` (a byte tensor), or nothing with ``seed=None``.
        """
        return {} if self._generator is None else {'generator': self._generator.get_state()}

    def load_rng_state_dict(self, state: dict) -> None:
        """Restore what :meth:`rng_state_dict` returned (a missing entry changes nothing)."""
        if self._generator is not None and 'generator' in state:
            self._generator.set_state(state['generator'].cpu())

    def draw_pairing(self, num_modalities: int) -> List[int]:
        """Draw the teacher of each student.

        Args:
            num_modalities (int): N.

        Returns:
            list[int]: ``teacher[m]`` for every student m; with N = 1, ``[0]``.
        """
        if num_modalities == 1:
            return [0]
        while True:  # rejection sampling: ~e draws on average for a derangement
            perm = torch.randperm(num_modalities, generator=self._generator).tolist()
            if self.pairing == 'permutation' or all(t != s for s, t in enumerate(perm)):
                return perm

    def forward(self, inputs: Sequence[Tensor]) -> List[Tensor]:
        """Select the per-modality stacks the loss uses.

        Args:
            inputs (Sequence[Tensor | None]): The neck outputs.

        Returns:
            list[Tensor]: The inputs at ``in_index``, each (B, N, C, h, w).

        Raises:
            ValueError: An index is out of range or its entry is not a (B, N, C, h, w) stack.
        """
        if not all(-len(inputs) <= i < len(inputs) for i in self.in_index):
            raise ValueError(f'SGMHead reads neck outputs {list(self.in_index)} but got '
                             f'{len(inputs)} outputs')
        feats = self._transform_inputs(inputs)
        for i, (f, c) in zip(self.in_index, zip(feats, self.in_channels)):
            if f is None:
                raise ValueError(
                    f'SGMHead input {i} is None: the neck produced no per-modality stacks '
                    '(CMTBNeck produces them in training mode only)')
            if f.dim() != 5 or f.shape[2] != c:
                raise ValueError(f'SGMHead input {i} must be a per-modality stack '
                                 f'(B, N, C={c}, h, w), got {tuple(f.shape)}')
        return feats

    def predict(self, inputs: Tuple[Tensor], batch_img_metas: List[dict],
                test_cfg: ConfigType) -> Tensor:
        """Not available: the SGM is a training-only auxiliary head."""
        raise RuntimeError('SGMHead is a training-only auxiliary head and predicts nothing; '
                           'EncoderDecoder calls it only in loss mode')

    def _prototypes(self, feat: Tensor, label: Tensor) -> Tensor:
        """Masked average pooling. feat (B, N, C, h, w), label (B, h, w) -> (N, K, C)."""
        b, n, c, h, w = feat.shape
        label = label.reshape(-1)
        valid = (label != self.ignore_index) & (label >= 0) & (label < self.num_classes)
        onehot = F.one_hot(torch.where(valid, label, 0), self.num_classes).to(feat.dtype)
        onehot = onehot * valid.unsqueeze(1).to(feat.dtype)
        counts = onehot.sum(0)
        present = counts > 0
        flat = feat.permute(1, 2, 0, 3, 4).reshape(n, c, b * h * w)
        sums = torch.einsum('ncp,pk->nkc', flat, onehot[:, present])
        return sums / counts[present].view(1, -1, 1)

    def loss_by_feat(self, feats: List[Tensor], batch_data_samples: SampleList) -> dict:
        """The SGM loss of the selected per-modality stacks.

        Args:
            feats (list[Tensor]): Per used stage, (B, N, C, h, w).
            batch_data_samples (list[SegDataSample]): Samples with ``gt_sem_seg``.

        Returns:
            dict[str, Tensor]: ``{loss_name: loss}``.
        """
        gt = self._stack_batch_gt(batch_data_samples)  # (B, 1, H, W)
        n = feats[0].shape[1]
        pairing = self.draw_pairing(n)
        self.last_pairing = tuple(pairing)
        teacher = torch.tensor(pairing, device=feats[0].device)
        total = feats[0].new_zeros((), dtype=torch.float32)
        # fp32 even under AMP: per-class sums over many pixels overflow fp16
        with torch.autocast(device_type=feats[0].device.type, enabled=False):
            for feat in feats if n > 1 else []:  # one modality: nothing to teach
                total = total + self._stage_loss(feat, gt, teacher)
        return {self.loss_name: total * (self.loss_weight / len(feats))}

    def _stage_loss(self, feat: Tensor, gt: Tensor, teacher: Tensor) -> Tensor:
        """KL(target || prediction) of one stage, averaged over modalities and classes."""
        label = F.interpolate(gt.float(), size=feat.shape[-2:], mode='nearest')
        protos = self._prototypes(feat.float(), label.long().squeeze(1))
        if protos.shape[1] == 0:
            return feat.new_zeros((), dtype=torch.float32)
        student = F.normalize(protos, dim=-1)
        anchors = student[teacher].detach()
        target = torch.softmax(anchors @ anchors.transpose(1, 2) / self.temperature, -1)
        log_pred = torch.log_softmax(student @ anchors.transpose(1, 2) / self.temperature, -1)
        return F.kl_div(log_pred, target, reduction='none').sum(-1).mean()

"""A trained segmentor as one function of the raw modality inputs and a presence mask: what
:func:`~equiseg_mm.deploy.export_onnx` exports."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

from mmseg.models.utils import resize
from ..models import MultiModalMiT, get_multimodal_preprocessor
from ..utils import unwrap_model

__all__ = ['DeploySegmentor']


def _run_branch(backbone: MultiModalMiT, index: int):
    """``torch.cond``'s branch for a present modality: the branch's maps (contiguous, the
    layout both branches of a ``cond`` must share)."""
    branch = backbone.branches[index]

    def run(x: Tensor) -> Tuple[Tensor, ...]:
        outs = branch(x)
        return tuple(o.contiguous() for o in ((outs, ) if isinstance(outs, Tensor) else outs))

    return run


def _stored(maps: Sequence[Tensor]):
    """``torch.cond``'s branch for an absent modality: the stored maps."""

    def run(x: Tensor) -> Tuple[Tensor, ...]:
        return tuple(m.clone() for m in maps)

    return run


class DeploySegmentor(nn.Module):
    """A multimodal segmentor as one function ``(*inputs, present) -> labels [, logits]``.

    Inputs, in the model's modality order: one (B, C_m, H, W) float32 tensor per modality, as
    the loader produces it and :class:`~equiseg_mm.models.MultiModalSegDataPreProcessor`
    receives it (values before normalisation; 3-channel files in cv2's BGR order), then
    ``present``, an (N,) bool tensor: ``present[m]`` False means modality m is absent (for the
    whole batch). Inside, as the eager model computes: the preprocessor's ``bgr_to_rgb`` flip and
    per-modality normalisation, absent modalities zeroed after normalisation (as under
    ``protocol(missing=...)``), the backbone, neck and decode head, the logits resized
    (bilinear, the head's ``align_corners``) to (H, W), and the label map: ``argmax`` over the
    classes, or ``sigmoid > threshold`` for a head with one output channel (then ``logits``
    are the probabilities), as mmseg's ``postprocess_result`` for an unpadded frame.

    Skipping absent branches (``skip_absent``; needs ``shape`` and a
    :class:`~equiseg_mm.models.MultiModalMiT` backbone): a branch's output for an all-zero input
    of a given size is a constant of its weights. Each branch's maps for zeros of the fixed size
    are computed here once and stored, and the branch runs under
    ``torch.cond(present[m], branch, stored maps)`` (an ONNX ``If``): an absent modality's
    branch does not run, and the outputs stay those of running it on zeros. Without it,
    absent inputs are zeroed and every branch runs. The preprocessor's protocol setting
    (``missing_modalities``, noise) is not part of the function: the mask decides.

    The segmentor is used, not copied: its backbone, neck and decode head are this module's
    submodules (the data preprocessor's statistics are copied into buffers; the auxiliary
    heads are left out).

    Args:
        segmentor (nn.Module): An ``EncoderDecoder`` (or subclass) with a
            :class:`~equiseg_mm.models.MultiModalSegDataPreProcessor`, ``test_cfg.mode`` 'whole'.
        shape (tuple[int, int], optional): The fixed input size (H, W). Defaults to None (any).
        skip_absent (bool, optional): Store the branches' zero-input maps and skip absent
            branches. None means whenever possible (a fixed ``shape`` and a MultiModalMiT
            backbone). Defaults to None.
        with_logits (bool): Return the resized logits as well. Defaults to False.

    Raises:
        ValueError: An unsupported segmentor (no multimodal preprocessor, no decode head,
            sliding-window test mode), a bad ``shape``, or ``skip_absent=True`` without a fixed
            shape or branches.
    """

    def __init__(self,
                 segmentor: nn.Module,
                 shape: Optional[Sequence[int]] = None,
                 skip_absent: Optional[bool] = None,
                 with_logits: bool = False) -> None:
        super().__init__()
        segmentor = unwrap_model(segmentor)
        pre = get_multimodal_preprocessor(segmentor, 'DeploySegmentor')
        for part in ('backbone', 'decode_head'):
            if not hasattr(segmentor, part):
                raise ValueError(f'DeploySegmentor needs an EncoderDecoder-like segmentor with '
                                 f'a {part}, got {type(segmentor).__name__}')
        mode = (getattr(segmentor, 'test_cfg', None) or {}).get('mode', 'whole')
        if mode != 'whole':
            raise ValueError(f"only test_cfg.mode='whole' can be exported, got {mode!r} "
                             "(set --cfg-options model.test_cfg.mode=whole)")
        if shape is not None:
            shape = tuple(shape)
            if len(shape) != 2 or not all(isinstance(s, int) and s > 0 for s in shape):
                raise ValueError(f'shape must be two positive ints (H, W), got {shape!r}')
        self.shape: Optional[Tuple[int, int]] = shape
        # the inference path only (no data preprocessor, no auxiliary head)
        self.backbone = segmentor.backbone
        self.neck = segmentor.neck if getattr(segmentor, 'with_neck', False) else None
        self.decode_head = segmentor.decode_head
        self.modalities: List[str] = list(pre.spec.names)
        self.channels: List[int] = list(pre.spec.channels)
        self.with_logits = bool(with_logits)
        self.branched = isinstance(self.backbone, MultiModalMiT)
        possible = shape is not None and self.branched
        if skip_absent and not possible:
            raise ValueError('skip_absent needs a fixed shape (not --dynamic-shape) and a '
                             'MultiModalMiT backbone (one branch per modality); '
                             f'shape={shape}, backbone {type(segmentor.backbone).__name__}')
        self.skip_absent = possible if skip_absent is None else bool(skip_absent)
        self.flip = [pre.bgr_to_rgb and m in pre.bgr_modalities for m in self.modalities]
        for n, sl in enumerate(pre.spec.slices.values()):
            c = sl.stop - sl.start
            self.register_buffer(f'mean_{n}', pre.mean[sl].detach().view(1, c, 1, 1).clone(),
                                 False)
            self.register_buffer(f'std_{n}', pre.std[sl].detach().view(1, c, 1, 1).clone(),
                                 False)
        self._zero_maps: List[List[str]] = []
        if self.skip_absent:
            self._store_zero_maps()

    @property
    def input_names(self) -> List[str]:
        """list[str]: The modality names, then ``'present'``."""
        return self.modalities + ['present']

    @property
    def output_names(self) -> List[str]:
        """list[str]: ``'labels'``, and ``'logits'`` with ``with_logits``."""
        return ['labels', 'logits'] if self.with_logits else ['labels']

    @torch.no_grad()
    def _store_zero_maps(self) -> None:
        backbone = self.backbone
        device = next(iter(self.buffers())).device
        for n, c in enumerate(self.channels):
            zeros = torch.zeros(1, c, *self.shape, device=device)
            maps = _run_branch(backbone, n)(zeros)
            names = []
            for i, m in enumerate(maps):
                names.append(f'zero_maps_{n}_{i}')
                self.register_buffer(names[-1], m.detach().clone(), False)
            self._zero_maps.append(names)

    def example_inputs(self, batch: int = 1, shape: Optional[Sequence[int]] = None,
                       seed: int = 0) -> Tuple[Tensor, ...]:
        """Random inputs in [0, 255] of ``shape`` (default the fixed one) and an all-true mask.

        Raises:
            ValueError: No ``shape`` and no fixed one.
        """
        shape = tuple(shape or self.shape or ())
        if len(shape) != 2:
            raise ValueError('give a shape (H, W): this DeploySegmentor has no fixed one')
        g = torch.Generator().manual_seed(seed)
        xs = tuple(torch.rand(batch, c, *shape, generator=g) * 255 for c in self.channels)
        return xs + (torch.ones(len(self.modalities), dtype=torch.bool), )

    def _normalise(self, n: int, x: Tensor) -> Tensor:
        x = x.float()
        if self.flip[n]:
            x = x.flip(1)
        return (x - getattr(self, f'mean_{n}')) / getattr(self, f'std_{n}')

    def forward(self, *args: Tensor) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """``(*inputs, present) -> labels`` (B, H, W) int64 ``[, logits]`` (B, K, H, W).

        Eager calls check the arguments (count, channels, sizes, mask); an exported graph only
        has its input shapes (``ORTSegmentor.run`` checks the rest).
        """
        *inputs, present = args
        if not torch.compiler.is_compiling():
            self._check(inputs, present)
        xs = [self._normalise(n, x) for n, x in enumerate(inputs)]
        if self.branched:
            backbone = self.backbone
            per_branch = []
            for n, x in enumerate(xs):
                if self.skip_absent:
                    stored = [getattr(self, k) for k in self._zero_maps[n]]
                    outs = torch.cond(present[n], _run_branch(backbone, n), _stored(stored),
                                      (x, ))
                else:
                    outs = _run_branch(backbone, n)(torch.where(present[n], x, 0.))
                per_branch.append(outs)
            feats = tuple(torch.stack([outs[i] for outs in per_branch], 1)
                          for i in range(len(per_branch[0])))
        else:
            feats = self.backbone(
                torch.cat([torch.where(present[n], x, 0.) for n, x in enumerate(xs)], 1))
        if self.neck is not None:
            feats = self.neck(feats)
        head = self.decode_head
        logits = resize(head(feats), size=inputs[0].shape[2:], mode='bilinear',
                        align_corners=head.align_corners, warning=False)
        if logits.shape[1] == 1:
            logits = logits.sigmoid()
            labels = (logits > head.threshold).long()[:, 0]
        else:
            labels = logits.argmax(1)
        return (labels, logits) if self.with_logits else labels

    def _check(self, inputs: Sequence[Tensor], present: Tensor) -> None:
        if len(inputs) != len(self.modalities):
            raise ValueError(f'expected {len(self.modalities)} inputs ({self.modalities}) and '
                             f'the mask, got {len(inputs)} inputs')
        if present.dtype != torch.bool or tuple(present.shape) != (len(self.modalities), ):
            raise ValueError(f'present must be a ({len(self.modalities)},) bool tensor, got '
                             f'{present.dtype} {tuple(present.shape)}')
        if not bool(present.any()):
            raise ValueError(f'present marks no modality; at least one of {self.modalities} '
                             'must be present')
        ref = tuple(inputs[0].shape)
        for m, c, x in zip(self.modalities, self.channels, inputs):
            want = (ref[0], c) + (self.shape or ref[2:])
            if x.dim() != 4 or tuple(x.shape) != want:
                raise ValueError(f'input {m!r}: expected shape {want} (B, C, H, W), got '
                                 f'{tuple(x.shape)}')

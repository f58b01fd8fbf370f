"""Refuse a checkpoint whose classes differ from the data's, in number, names or order."""
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


def _classes(loop_or_loader):
    loader = getattr(loop_or_loader, 'dataloader', loop_or_loader)
    meta = getattr(getattr(loader, 'dataset', None), 'metainfo', None) or {}
    return tuple(meta['classes']) if meta.get('classes') else None


@HOOKS.register_module()
class ClassOrderHook(Hook):
    """Raise ``ValueError`` when a loaded checkpoint was trained on other classes than the data
    this run evaluates or trains on (``meta['dataset_meta']['classes']``, which mmengine writes
    into every checkpoint): a swapped class order would otherwise give wrong per-class figures
    without any warning. Runs for ``--resume``, ``load_from`` and ``tools/test.py``; a checkpoint
    without recorded classes passes.

    Args:
        allow_other_classes (bool): Only warn (e.g. fine-tuning on a new label set with
            ``partial_checkpoint``). Defaults to False.
    """

    priority = 'VERY_HIGH'

    def __init__(self, allow_other_classes: bool = False) -> None:
        self.allow_other_classes = allow_other_classes

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = ((checkpoint.get('meta') or {}).get('dataset_meta') or {}).get('classes')
        if not saved:
            return
        for name in ('_test_loop', '_val_loop', '_train_loop', '_train_dataloader'):
            current = _classes(getattr(runner, name, None))
            if current is not None:
                break
        else:
            return
        if tuple(saved) == current:
            return
        diff = [f'{i}: {a!r} vs {b!r}' for i, (a, b) in enumerate(zip(saved, current)) if a != b]
        msg = (f'the checkpoint was trained on {len(saved)} classes, the data has '
               f'{len(current)}' + (f'; they differ at {", ".join(diff[:5])}' if diff else '') +
               '. Evaluate with the checkpoint\'s label set (dataset metainfo classes and '
               'palette in its order), or set ClassOrderHook(allow_other_classes=True)')
        if not self.allow_other_classes:
            raise ValueError(msg)
        runner.logger.warning(msg)

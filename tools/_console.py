"""Imported first by the tools that show a short console (run_demo.py, sweep.py): silences
import-time and build-time warnings of the OpenMMLab stack that are about the stack itself, not
about the user's run (they stay in the log files where mmengine writes them)."""
import warnings

for _message in (
        'Fail to import ``MultiScaleDeformableAttention``',  # mmcv-lite has no compiled ops
        'The draw is False',  # mmseg's SegVisualizationHook when drawing is off
        '``build_loss`` would be deprecated',
        'Default ``avg_non_ignore`` is False'):
    warnings.filterwarnings('ignore', message=_message)

"""Pictures and reports: modality panels and the robustness report.

The visualisation depends on ``equiseg_mm.models`` (it finds the data preprocessor with
:func:`~equiseg_mm.models.get_multimodal_preprocessor`), never on ``equiseg_mm.apis``: the
direction of mmseg, whose ``apis`` use its ``visualization``.
"""
from .modality_panel import draw_modality_panel, predict_modality_variants, visualize_modalities
from .robustness_report import write_robustness_report

__all__ = ['draw_modality_panel', 'predict_modality_variants', 'visualize_modalities',
           'write_robustness_report']

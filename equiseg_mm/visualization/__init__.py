from .modality_panel import draw_modality_panel, predict_modality_variants, visualize_modalities
from .robustness_report import write_robustness_report

__all__ = ['draw_modality_panel', 'predict_modality_variants', 'visualize_modalities',
           'write_robustness_report']

from .modality_panel import draw_modality_panel, predict_modality_variants, visualize_modalities

__all__ = ['draw_modality_panel', 'predict_modality_variants', 'visualize_modalities']

from .multi_modal_encoder_decoder import MultiModalEncoderDecoder

__all__ = ['MultiModalEncoderDecoder']

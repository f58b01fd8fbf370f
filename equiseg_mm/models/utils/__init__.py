from .fast_mit import (nlc_to_nchw_cl, stack_channels_last, to_channels_last, use_channels_last,
                       use_fast_attention)

__all__ = [
    'nlc_to_nchw_cl', 'stack_channels_last', 'to_channels_last', 'use_channels_last',
    'use_fast_attention'
]

from .digit_canvases import SEGMENTATION_CLASSES, prepare_digit_canvases
from .digits import DIGITS_CLASSES, PreparedSplit, prepare_digits

__all__ = ['DIGITS_CLASSES', 'PreparedSplit', 'prepare_digits', 'SEGMENTATION_CLASSES',
           'prepare_digit_canvases']

from .digit_canvases import SEGMENTATION_CLASSES, CanvasSplit, prepare_digit_canvases
from .digits import DIGITS_CLASSES, DigitsSplit, prepare_digits

__all__ = ['DIGITS_CLASSES', 'DigitsSplit', 'prepare_digits', 'SEGMENTATION_CLASSES',
           'CanvasSplit', 'prepare_digit_canvases']

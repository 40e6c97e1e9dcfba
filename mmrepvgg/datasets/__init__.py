from .digit_canvases import SEGMENTATION_CLASSES, CanvasSplit, prepare_digit_canvases
from .digits import DIGITS_CLASSES, DigitsSplit, prepare_digits
from .photos import PHOTO_CLASSES, PhotosSplit, prepare_photos

__all__ = ['DIGITS_CLASSES', 'DigitsSplit', 'prepare_digits', 'SEGMENTATION_CLASSES',
           'CanvasSplit', 'prepare_digit_canvases', 'PHOTO_CLASSES', 'PhotosSplit',
           'prepare_photos']

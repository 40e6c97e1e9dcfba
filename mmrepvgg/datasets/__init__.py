from .digits import DIGITS_CLASSES, DigitsSplit, prepare_digits
from .photos import PHOTO_CLASSES, PhotosSplit, prepare_photos

__all__ = ['DIGITS_CLASSES', 'DigitsSplit', 'prepare_digits', 'PHOTO_CLASSES', 'PhotosSplit',
           'prepare_photos']

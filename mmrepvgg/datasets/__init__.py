from .digits import DIGITS_CLASSES, DigitsSplit, prepare_digits

__all__ = ['DIGITS_CLASSES', 'DigitsSplit', 'prepare_digits']

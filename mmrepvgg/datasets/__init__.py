from .digits import DIGITS_CLASSES, DigitsSplit, prepare_digits

__all__ = ['prepare_digits', 'DIGITS_CLASSES']

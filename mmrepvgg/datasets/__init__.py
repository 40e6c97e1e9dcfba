"""The offline demo data: scikit-learn's digits, and digit canvases for dense prediction."""
from .digit_canvases import prepare_digit_canvases
from .digits import DIGITS_CLASSES, prepare_digits

__all__ = ['DIGITS_CLASSES', 'prepare_digits', 'prepare_digit_canvases']

"""Complexity counting (:mod:`.complexity`) and round-robin timing (:mod:`._timing`)."""
from .complexity import count_complexity

__all__ = ['count_complexity']

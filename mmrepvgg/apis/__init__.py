from .convert import repvgg_convert

__all__ = ['repvgg_convert']

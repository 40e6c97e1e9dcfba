"""Why a tensor read from a checkpoint cannot be used, decided from its metadata alone
(no element is read or allocated)."""
from typing import Optional

import torch


def view_exceeds_storage(shape: tuple, stride: tuple, storage_offset: int,
                         storage_elements: int) -> bool:
    """Whether a strided view claims more elements than its storage holds.

    A checkpoint stores each storage's bytes once; a view of ``shape`` (``stride`` in
    elements) over ``storage_elements`` is honest only if every element it names is in
    the storage and no two of its elements share one (a stride-0 dimension of size > 1, or
    more elements than the storage, would make a few bytes claim a 20000x20000 tensor that
    the first computation on it materialises).
    """
    numel = 1
    for size in shape:
        numel *= size
    if numel == 0:
        return False
    if any(size > 1 and step == 0 for size, step in zip(shape, stride)):
        return True
    last_element = storage_offset + sum((size - 1) * step for size, step in zip(shape, stride))
    return numel > storage_elements or last_element >= storage_elements


def tensor_problem(tensor: torch.Tensor) -> Optional[str]:
    """What makes ``tensor`` unusable as checkpoint data, with the fix; None if nothing."""
    if tensor.is_nested:
        return 'is a nested tensor; save its components as separate tensors'
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):  # DTensor, ...
        return (f'is a {type(tensor).__name__}, not a plain tensor; save plain tensors '
                '(e.g. DTensor.full_tensor())')
    if tensor.layout != torch.strided:
        return (f'is a sparse tensor ({tensor.layout}); save it dense '
                '(tensor.to_dense()) to use it here')
    if tensor.is_quantized:
        return ('is a quantized tensor; save the float weights (tensor.dequantize()) to use '
                'them here')
    if tensor.is_meta:
        return ('is a meta tensor (it holds no values); save the checkpoint from a model '
                'whose weights are materialised')
    if tensor.is_complex():
        return (f'has complex dtype {tensor.dtype}, whose imaginary part would be dropped; '
                'save real tensors')
    storage = tensor.untyped_storage()
    storage_elements = storage.nbytes() // tensor.element_size()
    if view_exceeds_storage(tuple(tensor.shape), tensor.stride(), tensor.storage_offset(),
                            storage_elements):
        plural = '' if storage_elements == 1 else 's'
        return (f'claims shape {tuple(tensor.shape)} with strides {tensor.stride()} over '
                f'{storage_elements} stored element{plural}, a damaged or malicious view; '
                're-download or re-save the checkpoint')
    return None

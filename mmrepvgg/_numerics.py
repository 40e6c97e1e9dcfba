"""Comparing model outputs: the relative error that verification and tests report."""
import inspect
from typing import List, Sequence, Union

import torch
from torch import Tensor, nn

# A function-preserving rewrite (fusion, equalization) is verified on a float64 copy of the
# model, where rounding stays far below this bound while a wrong kernel or bias exceeds it
# by orders of magnitude; in float32 deep variants' rounding comes too close to tell.
VERIFY_TOLERANCE = 1e-10
VERIFY_INPUT_SIZE = (2, 64, 64)  # (batch, height, width): small, yet 2x2 after stride 32


def max_relative_error(reference: Union[Tensor, Sequence[Tensor]],
                       other: Union[Tensor, Sequence[Tensor]]) -> float:
    """``max |reference - other| / max |reference|``, the worst over paired tensors."""
    if isinstance(reference, Tensor):
        reference, other = [reference], [other]
    if len(reference) != len(other):
        raise ValueError(f'{len(reference)} outputs against {len(other)}')
    return max(((ref - out).abs().max() / ref.abs().max()).item()
               for ref, out in zip(reference, other))


def _output_tensors(model: nn.Module, inputs: Tensor) -> List[Tensor]:
    """The raw outputs (mmengine models' ``mode='tensor'``), flattened."""
    if 'mode' in inspect.signature(model.forward).parameters:
        outputs = model(inputs, mode='tensor')
    else:
        outputs = model(inputs)
    pending, tensors = [outputs], []
    while pending:
        item = pending.pop()
        if isinstance(item, Tensor):
            tensors.append(item)
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
    return tensors


@torch.no_grad()
def max_relative_output_error(reference: nn.Module, candidate: nn.Module,
                              input_shape: Sequence[int], seed: int = 0) -> float:
    """:func:`max_relative_error` of the eval-mode models on one standard-normal batch
    ``input_shape`` ``(N, C, H, W)`` drawn with ``seed``, in the dtype of ``reference``."""
    dtype = next(reference.parameters()).dtype
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(*input_shape, generator=generator, dtype=torch.float64).to(dtype)
    return max_relative_error(_output_tensors(reference.eval(), inputs),
                              _output_tensors(candidate.eval(), inputs))

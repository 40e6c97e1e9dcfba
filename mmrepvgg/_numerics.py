"""Comparing model outputs: the relative error that verification and tests report."""
import inspect
from typing import List, Sequence, Union

import torch
from torch import Tensor, nn

# A function-preserving rewrite (fusion, equalization) is verified on a float64 copy of the
# model, where rounding (~1e-16 per operation, amplified through the layers) stays far below
# this bound, while a wrong kernel or bias changes the outputs by orders of magnitude more.
# In float32 the same rounding reaches 1e-4 on deep variants (D2se), too close to tell from
# a real error.
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


def output_tensors(model: nn.Module, inputs: Tensor) -> List[Tensor]:
    """The model's raw outputs (mmengine models in ``mode='tensor'``), flattened."""
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
    """``max |reference(x) - candidate(x)| / max |reference(x)|`` over the outputs for one
    standard-normal batch ``x`` of ``input_shape`` ``(N, C, H, W)`` drawn with ``seed``, in
    the dtype of ``reference``'s parameters; both models are put in eval mode."""
    dtype = next(reference.parameters()).dtype
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(*input_shape, generator=generator, dtype=torch.float64).to(dtype)
    return max_relative_error(output_tensors(reference.eval(), inputs),
                              output_tensors(candidate.eval(), inputs))

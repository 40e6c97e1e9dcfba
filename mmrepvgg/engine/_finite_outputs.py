"""A model whose outputs are not finite is not evaluated: its metrics would be numbers
(0 % accuracy, exit 0) about weights that are damaged (an ONNX file with NaN weights, BN
statistics that overflow float32), where a checkpoint holding NaN is refused."""
from typing import Any, Optional

import torch
from mmengine.hooks import Hook
from mmengine.structures import BaseDataElement

from ..checkpoint import CheckpointError

# Nested data elements (a segmentation sample's PixelData) are walked this deep at most.
_MAX_DEPTH = 4


def _first_non_finite_field(value: Any, name: str, depth: int = 0) -> Optional[str]:
    """The name of the first floating-point tensor in ``value`` (a tensor, a data element
    or a list of them) holding NaN or an infinity, else None."""
    if isinstance(value, torch.Tensor):
        finite = not value.is_floating_point() or bool(torch.isfinite(value).all())
        return None if finite else name
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, BaseDataElement):
        items = ((f'{name}.{key}', field) for key, field in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f'{name}[{index}]', field) for index, field in enumerate(value))
    else:
        return None
    return next((found for found in (_first_non_finite_field(field, field_name, depth + 1)
                                     for field_name, field in items) if found), None)


class FiniteOutputsCheck(Hook):
    """Refuse, in one line, a model whose test outputs hold NaN or an infinity, at the
    first batch that does (before any metric is computed). Validation during training is
    left alone: a diverging run shows it in its metrics and keeps its checkpoints.

    Raises:
        CheckpointError: naming the model and the output field.
    """
    priority = 'VERY_HIGH'

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        field = _first_non_finite_field(outputs, 'outputs')
        if field is None:
            return
        model = getattr(runner.model, 'name', None) or runner._load_from or 'the model'
        raise CheckpointError(
            f'{model}: gives NaN or infinite outputs ({field}) on test batch {batch_idx}; '
            'its weights are damaged (NaN, or too large for float32), so it is not '
            'evaluated; export or convert it again from a good checkpoint')

"""What a checkpoint reader returns: plain data, checked, whatever classes the file named.

Dict subclasses (an OrderedDict whose pickled state shadows ``get``) become plain dicts,
the restricted unpickler's placeholders (a yacs ``CfgNode``, an ``argparse.Namespace``) the
dict of their data, so a caller's ``.get``/``.items`` is always dict's
own; mmengine ``HistoryBuffer``s are rebuilt from their checked arrays alone; every tensor
must pass :func:`.tensor_checks.tensor_problem`.
"""
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from .tensor_checks import tensor_problem
from .unpickling import UnknownObject

class UnusableContentError(ValueError):
    """An item of the checkpoint that cannot be used; the message names its key."""

def _rebuilt_history_buffer(buffer: HistoryBuffer, where: str) -> HistoryBuffer:
    fields = vars(buffer)
    log_history, count_history = fields.get('_log_history'), fields.get('_count_history')
    max_length = fields.get('max_length')
    numeric = all(isinstance(history, np.ndarray) and history.dtype.kind in 'biuf'
                  and history.ndim == 1 for history in (log_history, count_history))
    if not (numeric and type(max_length) is int and max_length > 0):
        raise UnusableContentError(f'{where or "the checkpoint"} is a HistoryBuffer without '
                                   'numeric histories and max_length; re-save it')
    return HistoryBuffer(log_history, count_history, max_length)

def _unknown_object_data(unknown: UnknownObject) -> dict:
    """A mapping's data is its items (a yacs ``CfgNode``), another object's its attributes
    (an ``argparse.Namespace``): what the pickle set, as a dict."""
    if len(unknown):
        return dict(dict.items(unknown))
    state = unknown.pickled_state
    if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ values)
        state = {key: value for part in state if isinstance(part, dict)
                 for key, value in dict.items(part)}
    return dict(dict.items(state)) if isinstance(state, dict) else {}


def plain_data(value: Any, where: str = '') -> Any:
    """``value`` with dict subclasses made dicts, HistoryBuffers rebuilt, tensors checked.

    Args:
        value: what the unpickler returned.
        where: the key path of ``value`` for messages, e.g. ``['state_dict']['fc.weight']``.

    Raises:
        UnusableContentError: a tensor or HistoryBuffer that cannot be used.
    """
    if isinstance(value, torch.Tensor):
        problem = tensor_problem(value)
        if problem:
            raise UnusableContentError(f'tensor {where or "(top level)"} {problem}')
        return value
    if isinstance(value, UnknownObject):
        return plain_data(_unknown_object_data(value), where)
    if isinstance(value, dict):
        # dict.items, not value.items: the latter may be shadowed by the pickled state.
        return {key: plain_data(item, f'{where}[{key!r}]') for key, item in dict.items(value)}
    if type(value) in (list, tuple):
        return type(value)(plain_data(item, f'{where}[{index}]')
                           for index, item in enumerate(value))
    if isinstance(value, HistoryBuffer):
        return _rebuilt_history_buffer(value, where)
    return value

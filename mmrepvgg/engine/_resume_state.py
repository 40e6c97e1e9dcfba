"""A resumed training state (optimizer, schedulers, message hub) checked as data against the
run before torch and mmengine, which trust it, load it (a scheduler's ``load_state_dict`` is
``__dict__.update``; shared nested lists unfold into gigabytes when copied per reference)."""
import os
from collections import deque
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.optim import OptimWrapper, OptimWrapperDict

from ..checkpoint import CheckpointError

# An ImageNet model with one parameter group per tensor stays below a tenth of it.
MAX_STATE_NODES = 1_000_000
CONTAINERS = (dict, list, tuple, set, frozenset)
DATA_LEAVES = (str, bytes, bool, int, float, type(None), torch.Tensor, np.ndarray, np.generic,
               HistoryBuffer)
MESSAGE_HUB_VALUE_TYPES = {'log_scalars': HistoryBuffer, 'resumed_keys': bool}
# Message hub entries that mmengine's hooks and loops act on, and the type each must have
# (CheckpointHook builds file names to delete from keep_ckpt_ids).
RUNTIME_INFO_TYPES = {'epoch': int, 'iter': int, 'max_epochs': int, 'max_iters': int,
                      'keep_ckpt_ids': list, 'loop_stage': str, 'last_ckpt': str}
# Entries named per metric (best_score_accuracy/top1...): (types, as a refusal spells them).
RUNTIME_INFO_PREFIX_TYPES = {'best_score': ((int, float), 'a number'),
                             'best_ckpt': ((str, type(None)), 'a str')}


class _Refused(Exception):
    """What is wrong, with where in the state, e.g. ``optimizer.state.3.momentum_buffer``."""


def check_training_state(checkpoint: dict, optim_wrapper: Optional[OptimWrapper],
                         param_schedulers: Any, message_hub: MessageHub, filename: str,
                         checkpoint_dirs: Sequence[str] = ()) -> None:
    """Raise a one-line CheckpointError unless the training state of ``checkpoint`` is plain,
    bounded data with the structure of this run's built ``optim_wrapper`` (None: not loaded)
    and ``param_schedulers`` (a list, a dict of lists, or None), and its best checkpoints
    lie in ``checkpoint_dirs``, the folders this run's CheckpointHooks write to."""
    sections = [('message_hub', message_hub.state_dict(), _check_message_hub)]
    if optim_wrapper is not None:
        sections.append(('optimizer', optim_wrapper, _check_optimizer))
    if param_schedulers is not None:
        sections.append(('param_schedulers', _scheduler_states(param_schedulers), _check_like))
    try:
        for key, run_side, check in sections:
            if key in checkpoint:
                _check_plain_bounded_tree(checkpoint[key], key)
                check(run_side, checkpoint[key], key)
        if 'message_hub' in checkpoint:
            _check_best_checkpoints(checkpoint['message_hub']['runtime_info'], checkpoint_dirs)
    except _Refused as refusal:
        raise CheckpointError(
            f'{filename}: cannot resume from it, its training state does not fit this run '
            f'({refusal}); resume with the config it was saved by, or start from its '
            f'weights with --cfg-options load_from={filename}') from None


def _check_plain_bounded_tree(tree: Any, where: str) -> None:
    """Refuse shared containers of containers, other than data, and over-large trees."""
    # Breadth first: a shared container is named where it is first met again.
    seen_ids, num_nodes, queue = set(), 0, deque([(tree, where)])
    while queue:
        node, path = queue.popleft()
        num_nodes += 1
        if num_nodes > MAX_STATE_NODES:
            raise _Refused(f'{where} has over {MAX_STATE_NODES} entries')
        if isinstance(node, DATA_LEAVES):
            continue
        if not isinstance(node, CONTAINERS):
            raise _Refused(f'{path} holds a {type(node).__name__}, not training state data')
        if isinstance(node, dict):
            children = [child for key, value in node.items()
                        for child in ((key, f'{path} key'), (value, f'{path}.{key}'))]
        else:
            children = [(value, f'{path}.{index}') for index, value in enumerate(node)]
        if any(isinstance(child, CONTAINERS) and len(child) for child, _ in children):
            if id(node) in seen_ids:  # the checkpoint stays alive: ids are not reused
                raise _Refused(f'{path} is a container that appears more than once (a '
                               'shared reference, which loading would copy per use)')
            seen_ids.add(id(node))
        queue.extend(children)


def _check_like(reference: Any, loaded: Any, path: str) -> None:
    """``loaded`` has the structure of ``reference``: dicts with the same keys, sequences
    of the same length, tensors of the same shape, scalars of the same kind."""
    if isinstance(reference, dict):
        _require_keys(loaded, list(reference), path)
        for key, value in reference.items():
            _check_like(value, loaded[key], f'{path}.{key}')
    elif isinstance(reference, (list, tuple)):
        if not isinstance(loaded, (list, tuple)) or len(loaded) != len(reference):
            raise _Refused(f'{path} is {_describe(loaded)}, this run has a sequence of '
                           f'{len(reference)}')
        for index, (expected, value) in enumerate(zip(reference, loaded)):
            _check_like(expected, value, f'{path}.{index}')
    elif isinstance(reference, torch.Tensor):
        if not isinstance(loaded, torch.Tensor) or loaded.shape != reference.shape:
            raise _Refused(f'{path} is {_describe(loaded)}, this run has a tensor of shape '
                           f'{tuple(reference.shape)}')
    elif _kind(loaded) != _kind(reference):
        raise _Refused(f'{path} is {_describe(loaded)}, this run has {_describe(reference)}')


def _kind(value: Any) -> str:
    # A float hyperparameter may be stored as an int; a bool is no number here.
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return 'number'
    return type(value).__name__


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f'a tensor of shape {tuple(value.shape)}'
    if isinstance(value, (list, tuple)):
        return f'a sequence of {len(value)}'
    return f'a {type(value).__name__}'


def _require_keys(loaded: Any, keys: List[Any], path: str) -> None:
    if not isinstance(loaded, dict):
        raise _Refused(f'{path} is {_describe(loaded)}, this run has a dict')
    missing = [key for key in keys if key not in loaded]
    extra = [key for key in loaded if key not in keys]
    if missing or extra:
        raise _Refused(f'{path} has ' + (f'no key {missing[0]!r}' if missing else
                                         f'a key {extra[0]!r} this run does not have'))


def _check_optimizer(wrapper: OptimWrapper, loaded: Any, where: str) -> None:
    """The wrapper's state (param groups, an AMP loss scaler) like the run's; each
    parameter's state tensors of that parameter's shape, or scalars."""
    if isinstance(wrapper, OptimWrapperDict):
        _require_keys(loaded, list(wrapper.keys()), where)
        for name, each_wrapper in wrapper.items():
            _check_optimizer(each_wrapper, loaded[name], f'{where}.{name}')
        return
    reference = wrapper.state_dict()
    _require_keys(loaded, list(reference), where)
    for key, value in reference.items():
        if key != 'state':
            _check_like(value, loaded[key], f'{where}.{key}')
    parameters = {}  # the run's parameter each stored id stands for: torch pairs by position
    for group, loaded_group in zip(wrapper.optimizer.param_groups, loaded['param_groups']):
        for stored_id, parameter in zip(loaded_group['params'], group['params']):
            if stored_id in parameters:
                raise _Refused(f'{where}.param_groups names parameter {stored_id} twice')
            parameters[stored_id] = parameter
    if not isinstance(loaded['state'], dict):
        raise _Refused(f'{where}.state is {_describe(loaded["state"])}, not a dict')
    for stored_id, parameter_state in loaded['state'].items():
        path = f'{where}.state.{stored_id}'
        if stored_id not in parameters:
            raise _Refused(f'{path} belongs to no parameter of the param groups')
        if not isinstance(parameter_state, dict):
            raise _Refused(f'{path} is {_describe(parameter_state)}, not a dict')
        shape = parameters[stored_id].shape
        for name, value in parameter_state.items():
            if isinstance(value, torch.Tensor) and value.shape not in (shape, torch.Size()):
                raise _Refused(f'{path}.{name} is {_describe(value)}, its parameter has '
                               f'shape {tuple(shape)}')
            if not isinstance(value, (torch.Tensor, int, float, bool, type(None))):
                raise _Refused(f'{path}.{name} is {_describe(value)}, not a tensor or number')


def _scheduler_states(param_schedulers: Any) -> Any:
    # Checked for exactly these keys: a scheduler's load_state_dict sets each as an attribute.
    if isinstance(param_schedulers, dict):
        return {name: _scheduler_states(each) for name, each in param_schedulers.items()}
    return [scheduler.state_dict() for scheduler in param_schedulers]


def _check_message_hub(reference: dict, loaded: Any, where: str) -> None:
    _require_keys(loaded, list(reference), where)
    for section in reference:  # log_scalars, runtime_info, resumed_keys: dicts
        entries = loaded[section]
        if not isinstance(entries, dict):
            raise _Refused(f'{where}.{section} is {_describe(entries)}, not a dict')
        for key, value in entries.items():
            if not isinstance(key, str):
                raise _Refused(f'{where}.{section} has a key of type {type(key).__name__}')
            expected = _expected_type(section, key)
            if expected is None:
                continue
            types, spelled = expected
            wrong = not isinstance(value, types) or (isinstance(value, bool)
                                                     and types is not bool)
            step_list = section == 'runtime_info' and key == 'keep_ckpt_ids'
            if step_list and not wrong:
                wrong = not all(isinstance(step, int) and not isinstance(step, bool)
                                for step in value)
            if wrong:
                spelled = 'a list of int' if step_list else spelled
                raise _Refused(f'{where}.{section}.{key} is {_describe(value)}, not {spelled}')


def _expected_type(section: str, key: str) -> Optional[Tuple[Any, str]]:
    """``(types, as a refusal spells them)`` of a message hub entry, None: any data."""
    if section != 'runtime_info':
        expected = MESSAGE_HUB_VALUE_TYPES.get(section)
    else:
        prefixed = [typed for prefix, typed in RUNTIME_INFO_PREFIX_TYPES.items()
                    if key.startswith(prefix)]
        if prefixed:
            return prefixed[0]
        expected = RUNTIME_INFO_TYPES.get(key)
    return None if expected is None else (expected, f'a {expected.__name__}')


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` names an entry directly in ``folder`` or below it (links of the
    folders resolved, not of the entry: deleting a link deletes the link)."""
    if '://' in folder:  # a remote backend's prefix: compared as text
        return path.startswith(folder.rstrip('/') + '/') and '..' not in path.split('/')
    parent = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    return os.path.commonpath([parent, os.path.realpath(folder)]) == os.path.realpath(folder)


def _check_best_checkpoints(runtime_info: dict, checkpoint_dirs: Sequence[str]) -> None:
    # CheckpointHook deletes (file) or rmtree's (folder) the previous best_ckpt* (a str or
    # None, as _check_message_hub found) on a new best score.
    for key, value in runtime_info.items():
        if (key.startswith('best_ckpt') and value is not None
                and not any(_inside(value, folder) for folder in checkpoint_dirs)):
            raise _Refused(f'message_hub.runtime_info.{key} names {value!r}, outside this '
                           f'run\'s checkpoint folder {", ".join(checkpoint_dirs)}, which '
                           'mmengine would delete')

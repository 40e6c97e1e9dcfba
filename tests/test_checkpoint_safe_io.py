"""Reading a checkpoint never runs code from it, whichever way the pickle spells the call.

Each attack is checked to be live (``torch.load(weights_only=False)`` runs it and creates
the marker file) after our reader refused it with one line and created nothing.
"""
import collections
import contextlib
import functools
import os
import pickle
import subprocess
import sys
import types

import pytest
import torch
from checkpoint_fixtures import write_classifier_config
from conftest import load_tool, needs_safe_globals

import mmrepvgg  # noqa: F401  (routes mmengine's loading through the safe reader)
from mmrepvgg.checkpoint import CheckpointError, load_checkpoint_file


class Call:
    """Pickles as ``function(*args)``: how a pickle spells a call."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def builtin_eval(root=getattr):
    """``getattr(getattr(root, '__self__'), 'eval')``: from any builtin function to eval."""
    return Call(getattr, Call(getattr, root, '__self__'), 'eval')


def creates_file(marker):
    return f'open({str(marker)!r}, "w").close()'


def eval_through_rebuild_from_type(marker, root=getattr):
    """torch's allow-listed ``_rebuild_from_type_v2(func, type, args, state)`` calls
    ``func(*args)``."""
    return Call(torch._tensor._rebuild_from_type_v2, builtin_eval(root), torch.Tensor,
                (creates_file(marker), ), {})


def eval_through_partial(marker):
    return Call(torch._tensor._rebuild_from_type_v2,
                Call(functools.partial, builtin_eval(), creates_file(marker)), torch.Tensor,
                (), {})


def eval_through_wrapper_subclass(marker):
    return Call(torch._utils._rebuild_wrapper_subclass, builtin_eval(), torch.float32, (1, ),
                (1, ), 0, torch.strided, 'cpu', False, creates_file(marker))


def eval_through_parameter_state(marker):
    return Call(torch._utils._rebuild_parameter_with_state, torch.ones(1), False,
                collections.OrderedDict(), {'hook': eval_through_rebuild_from_type(marker)})


def ordered_dict_shadowing_get(marker):
    """An OrderedDict whose pickled ``__dict__`` sets ``get`` to eval."""
    hijacked = collections.OrderedDict(state_dict={'weight': torch.ones(2)})
    hijacked.__dict__['get'] = builtin_eval()
    hijacked.__dict__['marker'] = eval_through_rebuild_from_type(marker)
    return hijacked


def os_system(marker):
    return Call(os.system, f'touch {marker}')


ATTACKS = {
    'getattr.__self__ -> eval, via _rebuild_from_type_v2': eval_through_rebuild_from_type,
    'print.__self__ -> eval': functools.partial(eval_through_rebuild_from_type, root=print),
    'len.__self__ -> eval': functools.partial(eval_through_rebuild_from_type, root=len),
    'functools.partial(eval, code)': eval_through_partial,
    '_rebuild_wrapper_subclass(eval, ...)': eval_through_wrapper_subclass,
    '_rebuild_parameter_with_state(state=eval call)': eval_through_parameter_state,
    'OrderedDict state shadowing get': ordered_dict_shadowing_get,
    '__reduce__ to os.system': os_system,
}


def save_attack(path, attack, marker, zip_format=True):
    torch.save({'state_dict': {'weight': torch.ones(2)}, 'meta': attack(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    return str(path)


def assert_refused_and_nothing_ran(load, marker):
    with pytest.raises(CheckpointError, match=r'refused, it calls ') as error:
        load()
    assert '\n' not in str(error.value)
    assert not marker.exists()


def assert_live(path, marker):
    """The same file does run code when unpickled without restrictions."""
    with contextlib.suppress(Exception):  # the payload runs, then its result fails to rebuild
        torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize('attack_name', ATTACKS)
@pytest.mark.parametrize('zip_format', [True, False], ids=['zip', 'legacy'])
def test_attack_in_meta_is_refused_in_one_line_and_runs_nothing(tmp_path, attack_name,
                                                                zip_format):
    marker = tmp_path / 'PWNED'
    path = save_attack(tmp_path / 'evil.pth', ATTACKS[attack_name], marker, zip_format)

    assert_refused_and_nothing_ran(lambda: load_checkpoint_file(path), marker)

    if attack_name not in ('_rebuild_wrapper_subclass(eval, ...)',
                           '_rebuild_parameter_with_state(state=eval call)'):
        assert_live(path, marker)


def test_eval_payload_needing_the_restricted_fallback_is_refused(tmp_path, yacs_cfgnode_class):
    """A yacs config sends the file to the fallback unpickler, which must refuse too."""
    marker = tmp_path / 'PWNED'
    path = tmp_path / 'evil.pth'
    torch.save({'config': yacs_cfgnode_class({'A': 1}),
                'meta': eval_through_rebuild_from_type(marker)}, path)
    remove_yacs(sys.modules)
    assert_refused_and_nothing_ran(lambda: load_checkpoint_file(str(path)), marker)


def test_converter_tool_refuses_the_eval_payload_in_one_line(tmp_path, capsys):
    marker = tmp_path / 'PWNED'
    evil = save_attack(tmp_path / 'evil.pth', eval_through_rebuild_from_type, marker)
    config = write_classifier_config(tmp_path)
    tool = load_tool('tools/reparameterize_repvgg.py')

    exit_code = tool.main([str(config), evil, str(tmp_path / 'deploy.pth')])

    err = capsys.readouterr().err
    assert exit_code == 1
    assert err.startswith('error: ') and err.count('\n') == 1
    assert 'evil.pth: refused, it calls torch._tensor._rebuild_from_type_v2' in err
    assert not marker.exists() and not (tmp_path / 'deploy.pth').exists()


PLAIN_TORCH_LOAD_AFTER_IMPORT = '''
import sys, torch, mmengine.runner, mmpretrain.models  # what mmrepvgg imports
before = set(torch.serialization.get_safe_globals())
import mmrepvgg
assert set(torch.serialization.get_safe_globals()) == before, 'import mmrepvgg changed it'
try:
    torch.load(sys.argv[1], weights_only=True)
except Exception as error:
    print(type(error).__name__)
'''


@needs_safe_globals
def test_import_leaves_torchs_allow_list_alone_and_plain_torch_load_refuses(tmp_path):
    marker = tmp_path / 'PWNED'
    path = save_attack(tmp_path / 'evil.pth', eval_through_rebuild_from_type, marker)
    result = subprocess.run([sys.executable, '-c', PLAIN_TORCH_LOAD_AFTER_IMPORT, path],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'UnpicklingError'
    assert not marker.exists()


@needs_safe_globals
def test_our_load_leaves_torchs_allow_list_as_the_user_set_it(tmp_path):
    import numpy as np
    torch.save({'weight': torch.ones(1)}, tmp_path / 'model.pth')
    as_found = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals([np.ndarray])  # also on our list, during our load
    try:
        before = set(torch.serialization.get_safe_globals())  # a set in torch
        load_checkpoint_file(str(tmp_path / 'model.pth'))
        assert set(torch.serialization.get_safe_globals()) == before
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(as_found)


def test_ordered_dict_whose_state_shadows_get_reads_as_a_plain_dict(tmp_path):
    checkpoint = collections.OrderedDict(state_dict={'weight': torch.ones(2)})
    checkpoint.__dict__['get'] = 'not a method'
    torch.save(checkpoint, tmp_path / 'model.pth')

    loaded = load_checkpoint_file(str(tmp_path / 'model.pth'))

    assert type(loaded) is dict
    assert loaded.get('state_dict') is loaded['state_dict']


@pytest.fixture
def yacs_cfgnode_class(monkeypatch):
    """A stand-in for yacs' CfgNode (a dict subclass with attributes), importable only
    while the checkpoint is written, as on the official training machine."""
    module = types.ModuleType('yacs.config')

    class CfgNode(dict):
        def __init__(self, entries=None):
            super().__init__(entries or {})
            self.__dict__['__immutable__'] = True

    CfgNode.__module__, CfgNode.__qualname__ = 'yacs.config', 'CfgNode'
    module.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, 'yacs', types.ModuleType('yacs'))
    monkeypatch.setitem(sys.modules, 'yacs.config', module)
    return CfgNode


def remove_yacs(modules):
    """Forget yacs, as on a machine that reads the official checkpoint."""
    del modules['yacs.config'], modules['yacs']


def test_official_training_checkpoint_with_yacs_config_reads_as_plain_data(
        tmp_path, yacs_cfgnode_class):
    config = yacs_cfgnode_class({'MODEL': yacs_cfgnode_class({'ARCH': 'RepVGG-A0'}),
                                 'TRAIN': yacs_cfgnode_class({'BASE_LR': 0.1})})
    weights = {'stage0.rbr_dense.conv.weight': torch.randn(48, 3, 3, 3)}
    path = tmp_path / 'ckpt_epoch_119.pth'
    torch.save({'model': weights, 'optimizer': {'state': {}}, 'epoch': 119,
                'max_accuracy': 72.4, 'config': config}, path)
    remove_yacs(sys.modules)
    with pytest.raises(pickle.UnpicklingError):  # what plain weights_only does with it
        torch.load(path, weights_only=True)

    checkpoint = load_checkpoint_file(str(path))

    torch.testing.assert_close(checkpoint['model']['stage0.rbr_dense.conv.weight'],
                               weights['stage0.rbr_dense.conv.weight'])
    assert type(checkpoint['config']) is dict
    assert checkpoint['config'] == {'MODEL': {'ARCH': 'RepVGG-A0'}, 'TRAIN': {'BASE_LR': 0.1}}
    assert 'yacs' not in sys.modules  # nothing was imported to read it


def write_bytes_file(folder, name, content):
    path = folder / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize('case, expected', [
    ('missing', 'no such checkpoint file; check the path'),
    ('folder', 'is a folder, not a checkpoint file'),
    ('empty', r'is empty \(0 bytes\)'),
    ('text', r"not a PyTorch checkpoint \(it starts with b'model: A"),
    ('truncated', 'truncated or corrupt checkpoint'),
])
def test_unusable_files_raise_one_line_errors(tmp_path, case, expected):
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'weight': torch.randn(64, 64)}}, good)
    paths = {
        'missing': tmp_path / 'missing.pth',
        'folder': tmp_path,
        'empty': write_bytes_file(tmp_path, 'empty.pth', b''),
        'text': write_bytes_file(tmp_path, 'notes.pth', b'model: A0\nlr: 0.1\n'),
        'truncated': write_bytes_file(tmp_path, 'cut.pth',
                                      good.read_bytes()[:good.stat().st_size // 2]),
    }
    open_descriptors = len(os.listdir('/proc/self/fd'))
    for _ in range(3):
        with pytest.raises(CheckpointError, match=expected) as error:
            load_checkpoint_file(str(paths[case]))
        assert '\n' not in str(error.value)
    assert len(os.listdir('/proc/self/fd')) == open_descriptors  # none left open


def test_yacs_config_under_meta_reads_as_plain_data(tmp_path, yacs_cfgnode_class):
    path = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {'weight': torch.ones(2)},
                'meta': {'config': yacs_cfgnode_class({'ARCH': 'RepVGG-A0'})}}, path)
    remove_yacs(sys.modules)

    checkpoint = load_checkpoint_file(str(path))

    assert checkpoint['meta'] == {'config': {'ARCH': 'RepVGG-A0'}}
    torch.testing.assert_close(checkpoint['state_dict']['weight'], torch.ones(2))

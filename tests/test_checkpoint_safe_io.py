"""Reading checkpoints never runs code from them; writing never leaves half a file."""
import os
import pickle
import sys
import types

import pytest
import torch

import mmrepvgg  # noqa: F401  (applies the mmengine allow-list)
from mmrepvgg.checkpoint import (CheckpointError, load_checkpoint_file,
                                 save_checkpoint_atomic)
from mmrepvgg.checkpoint.safe_io import UnknownObject


def make_payloads(marker):
    """Objects whose unpickling would create ``marker`` if anything ran."""
    command = f'touch {marker}'

    class OsSystem:
        def __reduce__(self):
            return os.system, (command, )

    class BuiltinExec:
        def __reduce__(self):
            return exec, (f'open({str(marker)!r}, "w").close()', )

    return {'os.system': OsSystem(), 'exec': BuiltinExec()}


def getattr_chain_pickle(marker):
    """``getattr(os.system, '__call__')('touch marker')`` as raw opcodes:
    getattr is allow-listed for mmengine checkpoints and must not open a way to call."""
    return (b'\x80\x02cbuiltins\ngetattr\n(cposix\nsystem\nV__call__\ntR(V'
            + f'touch {marker}'.encode() + b'\ntR.')


@pytest.mark.parametrize('payload_name', ['os.system', 'exec'])
@pytest.mark.parametrize('container', ['torch.save', 'raw pickle'])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, payload_name, container):
    marker = tmp_path / 'PWNED'
    payload = make_payloads(marker)[payload_name]
    checkpoint = {'state_dict': {'weight': torch.ones(2)}, 'meta': payload}
    path = tmp_path / 'evil.pth'
    if container == 'torch.save':
        torch.save(checkpoint, path)
    else:
        path.write_bytes(pickle.dumps(checkpoint, protocol=2))

    with pytest.raises(CheckpointError, match='evil.pth: refused, it calls ') as error:
        load_checkpoint_file(str(path))

    assert not marker.exists()
    assert '\n' not in str(error.value)


def test_getattr_allow_listed_for_mmengine_cannot_be_used_to_call_code(tmp_path):
    marker = tmp_path / 'PWNED'
    path = tmp_path / 'evil.pth'
    path.write_bytes(getattr_chain_pickle(marker))
    with pytest.raises(CheckpointError, match='refused, it calls builtins.getattr'):
        load_checkpoint_file(str(path))
    assert not marker.exists()


def test_os_system_payload_is_named_in_the_refusal(tmp_path):
    marker = tmp_path / 'PWNED'
    path = tmp_path / 'evil.pth'
    torch.save({'meta': make_payloads(marker)['os.system']}, path)
    with pytest.raises(CheckpointError, match=r'refused, it calls posix\.system\(\.\.\.\)'):
        load_checkpoint_file(str(path))
    assert not marker.exists()


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


def test_official_training_checkpoint_with_yacs_config_loads_as_inert_data(
        tmp_path, yacs_cfgnode_class, monkeypatch):
    config = yacs_cfgnode_class({'MODEL': yacs_cfgnode_class({'ARCH': 'RepVGG-A0'}),
                                 'TRAIN': yacs_cfgnode_class({'BASE_LR': 0.1})})
    weights = {'stage0.rbr_dense.conv.weight': torch.randn(48, 3, 3, 3)}
    path = tmp_path / 'ckpt_epoch_119.pth'
    torch.save({'model': weights, 'optimizer': {'state': {}}, 'epoch': 119,
                'max_accuracy': 72.4, 'config': config}, path)
    monkeypatch.delitem(sys.modules, 'yacs.config')
    monkeypatch.delitem(sys.modules, 'yacs')
    with pytest.raises(pickle.UnpicklingError):  # what plain weights_only does with it
        torch.load(path, weights_only=True)

    checkpoint = load_checkpoint_file(str(path))

    torch.testing.assert_close(checkpoint['model']['stage0.rbr_dense.conv.weight'],
                               weights['stage0.rbr_dense.conv.weight'])
    assert isinstance(checkpoint['config'], UnknownObject)
    assert checkpoint['config'].pickled_class == 'yacs.config.CfgNode'
    assert checkpoint['config']['MODEL']['ARCH'] == 'RepVGG-A0'
    assert checkpoint['config'].pickled_state == {'__immutable__': True}
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
    with pytest.raises(CheckpointError, match=expected) as error:
        load_checkpoint_file(str(paths[case]))
    assert '\n' not in str(error.value)


def test_atomic_save_refuses_to_overwrite_without_permission(tmp_path):
    path = tmp_path / 'model.pth'
    path.write_bytes(b'keep me')
    with pytest.raises(FileExistsError, match='pass --force'):
        save_checkpoint_atomic({'weight': torch.ones(1)}, str(path))
    assert path.read_bytes() == b'keep me'
    save_checkpoint_atomic({'weight': torch.ones(1)}, str(path), overwrite=True)
    torch.testing.assert_close(torch.load(path, weights_only=True)['weight'], torch.ones(1))


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError('cannot pickle this')


def test_failed_atomic_save_keeps_old_file_and_removes_its_temporary_file(tmp_path):
    path = tmp_path / 'model.pth'
    path.write_bytes(b'keep me')
    with pytest.raises(RuntimeError, match='cannot pickle this'):
        save_checkpoint_atomic({'weight': torch.ones(1), 'bad': Unpicklable()}, str(path),
                               overwrite=True)
    assert path.read_bytes() == b'keep me'
    assert os.listdir(tmp_path) == ['model.pth']

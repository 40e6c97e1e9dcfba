"""Writing never clobbers, never half-writes, never leaves partial files behind, and
follows the umask."""
import errno
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from mmrepvgg.checkpoint import CheckpointError, atomic_output, save_checkpoint_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]

# A writer that stops mid-write until its stdin gets a line, after printing its partial
# file's path. It imports writing.py alone: the whole package takes ~15 s to import here.
BLOCKED_WRITER = f'''
import sys, types
for name in ('mmrepvgg', 'mmrepvgg.checkpoint'):
    package = types.ModuleType(name)
    package.__path__ = [{str(REPO_ROOT)!r} + '/' + name.replace('.', '/')]
    sys.modules[name] = package
from mmrepvgg.checkpoint._writing import atomic_output
with atomic_output(sys.argv[1]) as partial_path:
    with open(partial_path, 'wb') as stream:
        stream.write(b'half of a checkpoint')
        stream.flush()
        print(partial_path, flush=True)
        sys.stdin.readline()
        stream.write(b', then the rest')
'''


def as_from_a_shell():
    """The signal state a process started from a shell has: SIGINT and SIGTERM at
    their defaults and unblocked (a test runner's worker may have changed its own, and
    a child inherits ignored and blocked signals)."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def start_blocked_writer(dst):
    """(process, its partial file) once the writer is mid-write."""
    process = subprocess.Popen([sys.executable, '-c', BLOCKED_WRITER, str(dst)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=as_from_a_shell)
    partial_path = Path(process.stdout.readline().strip())
    assert partial_path.is_file(), process.stderr.read()
    return process, partial_path


def partial_files(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith('.partial'))


@pytest.mark.parametrize('signal_number, exit_code', [(signal.SIGTERM, -signal.SIGTERM),
                                                      (signal.SIGINT, -signal.SIGINT)])
def test_signal_mid_write_removes_the_partial_file_and_still_ends_the_process(
        tmp_path, signal_number, exit_code):
    process, partial_path = start_blocked_writer(tmp_path / 'deploy.pth')
    process.send_signal(signal_number)
    assert process.wait(timeout=60) == exit_code
    assert os.listdir(tmp_path) == []


def test_partials_of_a_killed_writer_are_swept_by_the_next_write_not_those_of_a_live_one(
        tmp_path):
    dst = tmp_path / 'deploy.pth'
    killed, killed_partial = start_blocked_writer(dst)
    killed.kill()
    killed.wait(timeout=60)
    assert partial_files(tmp_path) == [killed_partial.name]

    live, live_partial = start_blocked_writer(dst)  # the next write: sweeps the dead one's
    assert partial_files(tmp_path) == [live_partial.name]
    save_checkpoint_atomic({'weight': torch.ones(1)}, str(dst))  # leaves the live one's

    assert partial_files(tmp_path) == [live_partial.name]
    live.communicate('go on\n', timeout=60)  # finds deploy.pth written meanwhile
    assert live.returncode == 1
    assert partial_files(tmp_path) == []
    torch.testing.assert_close(torch.load(dst, weights_only=True)['weight'], torch.ones(1))


def test_without_overwrite_a_file_that_appears_during_the_write_is_kept(tmp_path):
    dst = tmp_path / 'deploy.pth'
    first_is_writing, second_has_written = threading.Event(), threading.Event()
    errors = []

    def first_run():
        try:
            with atomic_output(str(dst)) as partial_path:
                Path(partial_path).write_bytes(b'first')
                first_is_writing.set()
                second_has_written.wait(timeout=60)
        except FileExistsError as error:
            errors.append(str(error))

    first = threading.Thread(target=first_run)
    first.start()
    first_is_writing.wait(timeout=60)
    with atomic_output(str(dst)) as partial_path:
        Path(partial_path).write_bytes(b'second')
    second_has_written.set()
    first.join(timeout=60)

    assert dst.read_bytes() == b'second'
    assert len(errors) == 1 and 'appeared while writing it (another run?)' in errors[0]
    assert partial_files(tmp_path) == []


def refuse_hard_links(source, destination):
    raise OSError(errno.EPERM, os.strerror(errno.EPERM))


def test_on_a_filesystem_without_hard_links_the_write_still_never_clobbers(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(os, 'link', refuse_hard_links)  # as on FAT/exFAT
    dst = tmp_path / 'deploy.pth'
    with pytest.raises(FileExistsError, match='appeared while writing it'):
        with atomic_output(str(dst)) as partial_path:
            Path(partial_path).write_bytes(b'second')
            dst.write_bytes(b'first')  # another run finished meanwhile
    assert dst.read_bytes() == b'first'

    save_checkpoint_atomic({'weight': torch.ones(1)}, str(tmp_path / 'other.pth'))

    torch.testing.assert_close(torch.load(tmp_path / 'other.pth', weights_only=True)['weight'],
                               torch.ones(1))
    assert partial_files(tmp_path) == []


@pytest.mark.parametrize('link', ['same path', 'symlink', 'hardlink'])
def test_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path, link):
    source = tmp_path / 'model.pth'
    source.write_bytes(b'the only copy')
    dst = {'same path': source, 'symlink': tmp_path / 'sym.pth',
           'hardlink': tmp_path / 'hard.pth'}[link]
    if link == 'symlink':
        dst.symlink_to(source)
    elif link == 'hardlink':
        os.link(source, dst)

    with pytest.raises(CheckpointError, match=f'{dst.name}: is the input .*model.pth'):
        save_checkpoint_atomic({'weight': torch.ones(1)}, str(dst), overwrite=True,
                               inputs=[str(source)])
    assert source.read_bytes() == b'the only copy'


def test_full_disk_during_the_write_gives_one_line_and_keeps_the_old_file(tmp_path,
                                                                          monkeypatch):
    dst = tmp_path / 'deploy.pth'
    dst.write_bytes(b'previous deploy checkpoint')

    def save_until_the_disk_is_full(checkpoint, stream):
        stream.write(b'some bytes')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, 'save', save_until_the_disk_is_full)
    with pytest.raises(CheckpointError, match='deploy.pth: the disk is full') as error:
        save_checkpoint_atomic({'weight': torch.ones(1)}, str(dst), overwrite=True)
    assert '\n' not in str(error.value)
    assert dst.read_bytes() == b'previous deploy checkpoint'
    assert partial_files(tmp_path) == []


@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_file_mode_follows_the_umask_as_open_does(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        save_checkpoint_atomic({'weight': torch.ones(1)}, str(tmp_path / 'deploy.pth'))
        with open(tmp_path / 'opened', 'w'):
            pass
    finally:
        os.umask(previous)
    assert (tmp_path / 'deploy.pth').stat().st_mode & 0o777 == mode
    assert (tmp_path / 'opened').stat().st_mode & 0o777 == mode


def test_signal_handlers_are_restored_after_the_write(tmp_path):
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    save_checkpoint_atomic({'weight': torch.ones(1)}, str(tmp_path / 'deploy.pth'))
    assert {number: signal.getsignal(number) for number in before} == before


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


def test_failed_atomic_save_keeps_old_file_and_removes_its_partial_file(tmp_path):
    path = tmp_path / 'model.pth'
    path.write_bytes(b'keep me')
    with pytest.raises(RuntimeError, match='cannot pickle this'):
        save_checkpoint_atomic({'weight': torch.ones(1), 'bad': Unpicklable()}, str(path),
                               overwrite=True)
    assert path.read_bytes() == b'keep me'
    assert os.listdir(tmp_path) == ['model.pth']


def test_test_tool_dumps_predictions_atomically_and_never_over_an_existing_file(
        tmp_path, digits_workspace, monkeypatch):
    import contextlib
    import io
    import pickle

    from checkpoint_fixtures import REPO_ROOT
    from conftest import load_tool

    from mmrepvgg.apis.convert import build_train_model
    config = str(REPO_ROOT / 'configs' / 'digits' / 'repvgg-A0_digits.py')
    checkpoint = tmp_path / 'digits.pth'
    torch.save({'state_dict': build_train_model(config).state_dict()}, checkpoint)
    out = tmp_path / 'predictions.pkl'
    argv = [config, str(checkpoint), '--work-dir', str(tmp_path / 'work'), '--out', str(out),
            '--cfg-options', 'test_dataloader.dataset.indices=8',
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
    monkeypatch.chdir(digits_workspace)
    tool = load_tool('tools/test.py')

    with contextlib.redirect_stdout(io.StringIO()):
        assert tool.main(argv) == 0
    with open(out, 'rb') as stream:
        assert len(pickle.load(stream)) == 8
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        'digits.pth', 'predictions.pkl', 'work']
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        assert tool.main(argv) == 1
    assert errors.getvalue().startswith('error: --out ') and 'exists' in errors.getvalue()


def test_stale_sweep_leaves_the_partial_files_of_other_hosts(tmp_path):
    """A folder shared between nodes: a PID of another host says nothing here."""
    from mmrepvgg.checkpoint._writing import _host, _sweep_stale_partials
    dead_pid = 2**22 + 1  # above Linux's pid_max: no such process
    own = tmp_path / f'.deploy.pth.{_host()}.{dead_pid}.0a1b2c3d.partial'
    other = tmp_path / f'.deploy.pth.other-node-7.{dead_pid}.0a1b2c3d.partial'
    own.write_bytes(b'half')
    other.write_bytes(b'half')

    assert _sweep_stale_partials(str(tmp_path / 'deploy.pth')) == [str(own)]
    assert not own.exists() and other.exists()


FILE_SIZE_LIMITED_SAVE = BLOCKED_WRITER.split('from mmrepvgg')[0] + '''
import resource, torch
from mmrepvgg.checkpoint.errors import CheckpointError
from mmrepvgg.checkpoint._writing import save_checkpoint_atomic
resource.setrlimit(resource.RLIMIT_FSIZE, (100000, 100000))
try:
    save_checkpoint_atomic({'weight': torch.zeros(10**6)}, sys.argv[1])
except CheckpointError as error:
    print(error)
'''


def test_a_file_size_limit_mid_write_is_one_line_and_leaves_nothing(tmp_path):
    result = subprocess.run([sys.executable, '-c', FILE_SIZE_LIMITED_SAVE,
                             str(tmp_path / 'big.pth')], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count('\n') == 1
    assert 'big.pth: could not be written (File too large: the disk is full' in \
        result.stdout
    assert os.listdir(tmp_path) == []


CTRL_C_INSIDE_TORCH_SAVE = BLOCKED_WRITER.split('from mmrepvgg')[0] + '''
import os, signal, torch
from mmrepvgg.checkpoint._writing import save_checkpoint_atomic


class PressesCtrlC:
    """Pickled in the middle of torch.save: the user's Ctrl-C arrives right then."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGINT)
        return (int, ())


try:
    save_checkpoint_atomic({'weight': torch.zeros(1000), 'meta': PressesCtrlC()}, sys.argv[1])
except KeyboardInterrupt:
    print('KeyboardInterrupt')
'''


def test_ctrl_c_inside_torch_save_is_a_keyboard_interrupt_and_leaves_nothing(tmp_path):
    result = subprocess.run([sys.executable, '-c', CTRL_C_INSIDE_TORCH_SAVE,
                             str(tmp_path / 'model.pth')], capture_output=True, text=True,
                            preexec_fn=as_from_a_shell)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == 'KeyboardInterrupt\n'
    assert os.listdir(tmp_path) == []

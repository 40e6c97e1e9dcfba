"""The calling thread's alternate signal stack, kept across calls into OpenVINO's CPU plugin.

Every instance of OpenVINO's CPU plugin (one per ``openvino.Core`` that compiles a model,
NNCF's statistics engines included) maps an alternate signal stack of its own and installs
it on the thread that created the instance (``sigaltstack(2)``), remembering the stack it
replaced. When the instance is destroyed it unmaps its stack, and puts the remembered one
back only if its own is still installed. Two instances destroyed in the order they were
created therefore leave the thread on the first one's stack, already unmapped; one
destroyed on another thread leaves its creator on an unmapped stack. The next signal whose
handler runs on the alternate stack then kills the process with SIGSEGV, as the kernel
cannot write the signal frame: every Python-level handler runs there (CPython installs
them with ``SA_ONSTACK``), for instance the SIGCHLD handler of torch's DataLoader when a
loader worker exits. Seen with openvino 2026.4.1: a test process died that way, tests
later than its OpenVINO ones.

:func:`signal_stack_kept` puts the caller's stack back as soon as a call that may create
plugin instances returns. Every instance then remembers a stack that is not OpenVINO's and
finds its own stack not installed when it dies, so it restores nothing and only unmaps a
stack no thread uses, whatever the order or thread of destruction.
"""
import contextlib
import ctypes
import os
import sys
from typing import Iterator, Optional


class _StackT(ctypes.Structure):
    """Linux's ``stack_t`` (the same field order on x86-64 and aarch64)."""
    _fields_ = [('ss_sp', ctypes.c_void_p), ('ss_flags', ctypes.c_int),
                ('ss_size', ctypes.c_size_t)]


def _sigaltstack(new: Optional[_StackT]) -> _StackT:
    """Install ``new`` as this thread's alternate signal stack (None: only read) and return
    the one it had."""
    libc = ctypes.CDLL(None, use_errno=True)
    old = _StackT()
    if libc.sigaltstack(None if new is None else ctypes.byref(new), ctypes.byref(old)):
        error = ctypes.get_errno()
        raise OSError(error, f'sigaltstack: {os.strerror(error)}')
    return old


def _same_stack(first: _StackT, second: _StackT) -> bool:
    return (first.ss_sp, first.ss_size, first.ss_flags) == (
        second.ss_sp, second.ss_size, second.ss_flags)


@contextlib.contextmanager
def signal_stack_kept() -> Iterator[None]:
    """Run the block, then give the calling thread back the alternate signal stack it had
    before it (see the module's docstring for why). Nothing is done off Linux, or where the
    kernel refuses the old stack (it refuses one too small for the signal frame of a
    process that has since enabled AMX): the stack the block left stays."""
    if not sys.platform.startswith('linux'):
        yield
        return
    before = _sigaltstack(None)
    try:
        yield
    finally:
        if not _same_stack(_sigaltstack(None), before):
            with contextlib.suppress(OSError):
                _sigaltstack(before)

"""Run a command as on an x86 CPU with AVX2 but without AVX-512, VNNI or AMX: the CPU an
INT8 figure for "AVX2-only hosts" needs, emulated on a VNNI host (Linux x86-64 with CPUID
faulting, ``cpuid_fault`` in /proc/cpuinfo; a C compiler builds the library).

    python benchmarks/as_avx2_only.py python benchmarks/int8_speed.py
    python benchmarks/as_avx2_only.py python tools/deployment/test.py CONFIG x.onnx \
        --int8-kernels u8u8

The command runs with ``avx2_only.c`` (beside this file) built and preloaded, which hides
those instruction sets from CPUID in the command and its children: ONNX Runtime, oneDNN
(OpenVINO, PyTorch), numpy and OpenBLAS pick the kernels an AVX2-only CPU runs, on this
CPU's cores (its caches and clocks stay this CPU's). The lab's instruments see the
emulated CPU (:mod:`lab.emulated_cpu`): their CPU line reads "AVX2; ... hidden from CPUID:
AVX2-only CPU emulated" and their INT8 rows get its weights and kernels. The package's own
tools read /proc/cpuinfo, which still lists the hidden instruction sets: name their INT8
kernels and weight width (``pytorch2onnx.py --int8-recipe int8_kernels=... weight_bits=...``,
``tools/deployment/test.py --int8-kernels``). Exits with the command's exit status.
"""
import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from lab.avx2_only_library import AVX2_ONLY_LIBRARY, avx2_only_loaded

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'avx2_only.c')
# The constructor of the library exits with this status where CPUID cannot fault.
NO_CPUID_FAULTING = 3


class EmulationError(RuntimeError):
    """The AVX2-only emulation cannot run here; the message says why, in one line."""


def build_library(directory: str) -> str:
    """Compile :data:`SOURCE` into ``directory``; the library's path.

    Raises:
        EmulationError: not Linux x86-64, or no C compiler (``$CC``, cc or gcc) built it.
    """
    if not sys.platform.startswith('linux') or platform.machine() not in ('x86_64', 'AMD64'):
        raise EmulationError(f'the AVX2-only emulation needs Linux on x86-64, not '
                             f'{sys.platform} on {platform.machine()}')
    compiler = os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc')
    if not compiler:
        raise EmulationError('no C compiler to build avx2_only.c: install gcc or set CC')
    library = os.path.join(directory, AVX2_ONLY_LIBRARY)
    try:
        build = subprocess.run([compiler, '-O2', '-shared', '-fPIC', '-o', library, SOURCE, '-ldl'],
                               capture_output=True, text=True)
    except OSError as error:
        raise EmulationError(f'{compiler} could not run ({error}): install gcc or set CC')
    if build.returncode != 0:
        first = (build.stderr.strip().splitlines() or ['no message'])[0]
        raise EmulationError(f'{compiler} failed to build avx2_only.c: {first}')
    return library


def emulation_environment(library: str, environment: dict) -> dict:
    """``environment`` with ``library`` preloaded before anything it preloads already."""
    preload = ' '.join(filter(None, [library, environment.get('LD_PRELOAD', '')]))
    return {**environment, 'LD_PRELOAD': preload}


def check_emulation(environment: dict) -> None:
    """Start a trivial process under the library and check that it is loaded there.

    Raises:
        EmulationError: this CPU or kernel cannot make CPUID fault, or the library was not
            loaded (the loader ignores a preload it cannot open, e.g. from a ``CC`` that
            wrote nothing).
    """
    probe = subprocess.run([sys.executable, '-c', 'print(open("/proc/self/maps").read())'],
                           env=environment, capture_output=True, text=True)
    if probe.returncode == NO_CPUID_FAULTING:
        raise EmulationError('this CPU or kernel cannot make CPUID fault (no cpuid_fault '
                             'in /proc/cpuinfo): run the command on an AVX2-only CPU')
    if probe.returncode != 0:
        raise EmulationError(f'a process under avx2_only.c exited {probe.returncode}: '
                             f'{probe.stderr.strip()[-300:]}')
    if not avx2_only_loaded(probe.stdout):
        raise EmulationError('the built avx2_only library was not loaded (is CC a C '
                             'compiler?): install gcc or set CC')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description='Run COMMAND with AVX-512, VNNI and AMX hidden from CPUID (AVX2-only).')
    parser.add_argument('command', nargs=argparse.REMAINDER,
                        help='the command and its arguments')
    args = parser.parse_args(argv)
    if args.command[:1] == ['--']:  # the usual end of this tool's own options
        args.command = args.command[1:]
    if not args.command:
        parser.error('name the command to run, e.g. python benchmarks/int8_speed.py')
    with tempfile.TemporaryDirectory() as directory:
        try:
            environment = emulation_environment(build_library(directory), dict(os.environ))
            check_emulation(environment)
        except EmulationError as error:
            print(f'error: {error}', file=sys.stderr)
            return 1
        try:
            status = subprocess.run(args.command, env=environment).returncode
            return status if status >= 0 else 128 - status  # killed: as a shell says
        except OSError as error:
            print(f'error: cannot run {args.command[0]!r}: {error.strerror}', file=sys.stderr)
            return 127


if __name__ == '__main__':
    sys.exit(main())

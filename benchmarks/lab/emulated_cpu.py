"""The CPU as a process under ``as_avx2_only.py`` sees it.

``as_avx2_only.py`` preloads a library (``avx2_only.c``) that hides AVX-512, VNNI and AMX
from CPUID, so that ONNX Runtime, oneDNN and numpy run their AVX2 kernels on a VNNI CPU.
/proc/cpuinfo still lists the hidden flags, so :func:`mmrepvgg.deploy._host_cpu.host_cpu`
describes the real CPU; here the library is found in the process's memory map and the
CPU is described as the emulated one, with what it hides named beside the figures.
"""
from typing import Dict, NamedTuple, Optional

from mmrepvgg.deploy._host_cpu import _HostCpu as HostCpu
from mmrepvgg.deploy._host_cpu import ISA_FLAGS, _read, host_cpu

from .avx2_only_library import avx2_only_loaded

# The instruction sets of ISA_FLAGS a CPU keeps under the AVX2-only library.
AVX2_ONLY_ISA = frozenset({ISA_FLAGS['avx2']})
PROC_MAPS_PATH = '/proc/self/maps'


def hidden_isa_note(hidden_isa) -> str:
    """How a figure's CPU line names instruction sets hidden by ``as_avx2_only.py``, e.g.
    ``'AVX-512, AVX512-VNNI hidden from CPUID: AVX2-only CPU emulated'``."""
    return f'{", ".join(hidden_isa)} hidden from CPUID: AVX2-only CPU emulated'


class SeenCpu(NamedTuple):
    """The CPU a process sees.

    Attributes:
        cpu: the CPU with only the instruction sets the process can use (what
            :func:`~mmrepvgg.deploy._host_cpu.int8_kernel_choice` and
            :func:`~mmrepvgg.deploy._host_cpu.int8_weight_choice` are to be asked about).
        hidden_isa: the instruction sets the CPU has but the process cannot see (the
            emulation), e.g. ``('AVX-512', 'AVX512-VNNI')``; empty without it.
    """
    cpu: HostCpu
    hidden_isa: tuple = ()

    def describe(self) -> str:
        """The CPU's one line, the emulation named inside its brackets."""
        line = self.cpu.describe()
        return f'{line[:-1]}; {hidden_isa_note(self.hidden_isa)})' if self.hidden_isa else line

    def as_dict(self) -> Dict[str, object]:
        """What a figure's JSON records about the CPU."""
        return {**self.cpu._asdict(), 'isa': list(self.cpu.isa), 'vnni': self.cpu.has_vnni,
                'hidden_isa': list(self.hidden_isa)}


def seen_cpu(threads: Optional[int] = None, cpuinfo_text: Optional[str] = None,
             architecture: Optional[str] = None, maps_text: Optional[str] = None) -> SeenCpu:
    """:func:`~mmrepvgg.deploy._host_cpu.host_cpu` (same arguments) as this process sees it.

    Args:
        maps_text: a /proc/self/maps text (default: this process's for this machine,
            none for ``cpuinfo_text``'s): where it maps the AVX2-only library, the CPU
            is described as AVX2-only, with the rest of its ISA named as hidden.
    """
    if maps_text is None:
        maps_text = _read(PROC_MAPS_PATH) if cpuinfo_text is None else ''
    cpu = host_cpu(threads, cpuinfo_text, architecture)
    if not avx2_only_loaded(maps_text):
        return SeenCpu(cpu)
    hidden = tuple(label for label in cpu.isa if label not in AVX2_ONLY_ISA)
    return SeenCpu(cpu._replace(isa=tuple(label for label in cpu.isa if label in AVX2_ONLY_ISA)),
                   hidden)

"""The CPU an INT8 figure was measured on: model name, the instruction sets that decide
which integer kernels run, and the threads.

INT8 speed and even INT8 accuracy depend on the CPU. With VNNI (AVX-512 VNNI or AVX-VNNI)
a u8 x s8 dot product accumulates straight into int32. Without it, x86 kernels multiply
pairs of u8 x s8 into a *saturating* int16 (``vpmaddubsw``) before widening, and
255 * 127 * 2 overflows int16: ONNX Runtime's u8s8 kernels can then return wrong sums
(onnxruntime issue 12088). Two ways out: weights of 7 bits (within +-64, ONNX Runtime's
``reduce_range``), whose pairs stay within int16 (``2 * 255 * 64 = 32640``) so the fast
u8s8 kernels are exact (:func:`int8_weight_choice` picks them for a file written on such a
CPU), or ONNX Runtime's slower u8u8 path (``session.x64quantprecision``), which
:func:`int8_kernel_choice` picks for 8-bit weights there. AMX adds int8 tile multiplies.
"""
import os
import platform
from typing import Dict, FrozenSet, NamedTuple, Optional

CPUINFO_PATH = '/proc/cpuinfo'
# /proc/cpuinfo flag -> the name figures are labelled with.
ISA_FLAGS = {'avx2': 'AVX2', 'avx512f': 'AVX-512', 'avx512_vnni': 'AVX512-VNNI',
             'avx_vnni': 'AVX-VNNI', 'amx_int8': 'AMX-INT8'}
VNNI_FLAGS = frozenset({'avx512_vnni', 'avx_vnni'})
X86_ARCHITECTURES = ('x86_64', 'amd64', 'i386', 'i686')
# oneDNN's cap on the instruction sets it uses (OpenVINO's CPU plugin and PyTorch's convs
# obey it; ONNX Runtime's kernels do not): with ONEDNN_MAX_CPU_ISA=AVX2 a VNNI CPU runs
# those as an AVX2-only one would.
ONEDNN_ISA_CAP_VARIABLE = 'ONEDNN_MAX_CPU_ISA'

# The ONNX Runtime session entry that makes x64 INT8 kernels multiply u8 x u8 (exact in
# int16 pairs after the weights are shifted to uint8) instead of u8 x s8.
X64_QUANT_PRECISION_KEY = 'session.x64quantprecision'
INT8_KERNELS = ('u8s8', 'u8u8')
# Weight widths of an INT8 file and the largest |weight| each allows (7 bits: ONNX
# Runtime's reduce_range, [-64, 64]).
INT8_WEIGHT_MAX = {8: 127, 7: 64}
UINT8_MAX, INT16_MAX = 255, 32767


def pairs_fit_int16(weight_max: int) -> bool:
    """Whether two uint8 x int8 products with ``|weight| <= weight_max`` always add up to
    an int16 (what the non-VNNI u8s8 kernels need to be exact)."""
    return 2 * UINT8_MAX * weight_max <= INT16_MAX


class HostCpu(NamedTuple):
    """What an INT8 figure needs to say about the machine.

    Attributes:
        model_name: ``model name`` of /proc/cpuinfo (``platform.processor()`` elsewhere).
        isa: the instruction sets of :data:`ISA_FLAGS` this CPU has, e.g.
            ``('AVX2', 'AVX-512', 'AVX512-VNNI')``.
        logical_cpus: logical CPUs the OS reports.
        architecture: ``platform.machine()``, e.g. ``'x86_64'``.
        threads: the threads the figure was measured with (None: the runtime's default).
        onednn_isa_cap: the value of ``ONEDNN_MAX_CPU_ISA`` when it was set, else None.
    """
    model_name: str
    isa: tuple
    logical_cpus: int
    architecture: str
    threads: Optional[int] = None
    onednn_isa_cap: Optional[str] = None

    @property
    def is_x86(self) -> bool:
        return self.architecture.lower() in X86_ARCHITECTURES

    @property
    def has_vnni(self) -> bool:
        return bool({ISA_FLAGS[flag] for flag in VNNI_FLAGS} & set(self.isa))

    @property
    def saturates_int16_pairs(self) -> bool:
        """x86 without VNNI: its u8s8 kernels add pairs of products in saturating int16."""
        return self.is_x86 and not self.has_vnni

    def describe(self) -> str:
        """One line, e.g. ``Intel(R) Xeon(R) Processor (AVX2, AVX-512, AVX512-VNNI;
        2 logical CPUs; 1 thread)``."""
        threads = ('default threads' if self.threads is None else
                   f'{self.threads} thread{"s" if self.threads != 1 else ""}')
        isa = ', '.join(self.isa) or 'no AVX2 or VNNI'
        cap = (f'; oneDNN (OpenVINO, PyTorch) capped to {self.onednn_isa_cap} by '
               f'{ONEDNN_ISA_CAP_VARIABLE}' if self.onednn_isa_cap else '')
        return (f'{self.model_name} ({self.architecture}; {isa}; {self.logical_cpus} '
                f'logical CPUs; {threads}{cap})')

    def as_dict(self) -> Dict[str, object]:
        return dict(model_name=self.model_name, isa=list(self.isa),
                    logical_cpus=self.logical_cpus, architecture=self.architecture,
                    threads=self.threads, vnni=self.has_vnni,
                    onednn_isa_cap=self.onednn_isa_cap)


def parse_cpuinfo(text: str) -> 'tuple[str, FrozenSet[str]]':
    """The first ``model name`` and the first ``flags`` set of a /proc/cpuinfo text
    (``('', frozenset())`` for what is missing)."""
    model_name, flags = '', frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(':')
        key = key.strip()
        if key == 'model name' and not model_name:
            model_name = value.strip()
        elif key == 'flags' and not flags:
            flags = frozenset(value.split())
    return model_name, flags


def _read(path: str) -> str:
    """The text of ``path``, or '' where it cannot be read (not Linux)."""
    try:
        with open(path) as stream:
            return stream.read()
    except OSError:
        return ''


def host_cpu(threads: Optional[int] = None, cpuinfo_text: Optional[str] = None,
             architecture: Optional[str] = None) -> HostCpu:
    """Describe this machine's CPU as /proc/cpuinfo names it (or the one ``cpuinfo_text``
    and ``architecture`` describe).

    Args:
        threads: the thread count the caller measures with (None: runtime default).
        cpuinfo_text: a /proc/cpuinfo text to read instead of this machine's.
        architecture: ``platform.machine()`` of that machine (default: this one's).
    """
    model_name, flags = parse_cpuinfo(_read(CPUINFO_PATH) if cpuinfo_text is None
                                      else cpuinfo_text)
    isa = tuple(label for flag, label in ISA_FLAGS.items() if flag in flags)
    return HostCpu(model_name or platform.processor() or 'unknown CPU', isa,
                   os.cpu_count() or 1, architecture or platform.machine(), threads,
                   os.environ.get(ONEDNN_ISA_CAP_VARIABLE) or None)


class Int8KernelChoice(NamedTuple):
    """Which ONNX Runtime x64 INT8 kernels a session uses, and why."""
    kernels: str
    reason: str

    def session_entries(self) -> Dict[str, str]:
        """ONNX Runtime session config entries that select :attr:`kernels`."""
        return {X64_QUANT_PRECISION_KEY: '1'} if self.kernels == 'u8u8' else {}


def int8_kernel_choice(cpu: HostCpu, requested: str = 'auto',
                       weight_max: Optional[int] = None) -> Int8KernelChoice:
    """The ONNX Runtime INT8 kernels accurate on ``cpu`` for a file whose largest |int8
    weight| is ``weight_max`` (None: unknown, taken as 8 bits): u8s8 where the CPU has
    VNNI (int32 accumulation) or is not x86, or where the weights keep every pair within
    int16 (7 bits); u8u8 on x86 without VNNI for 8-bit weights. ``requested``
    ``'u8s8'`` or ``'u8u8'`` forces one (to compare both on one host).

    Raises:
        ValueError: ``requested`` is not ``'auto'`` or one of :data:`INT8_KERNELS`.
    """
    if requested not in ('auto', *INT8_KERNELS):
        raise ValueError(f'unknown INT8 kernels {requested!r}; choose auto, '
                         f'{" or ".join(INT8_KERNELS)}')
    if requested != 'auto':
        return Int8KernelChoice(requested, 'requested')
    if cpu.has_vnni:
        return Int8KernelChoice('u8s8', 'the CPU has VNNI: u8 x s8 accumulates in int32')
    if not cpu.is_x86:
        return Int8KernelChoice('u8s8', f'{cpu.architecture}: not an x86 CPU')
    if weight_max is not None and pairs_fit_int16(weight_max):
        return Int8KernelChoice('u8s8', f'x86 without VNNI, but the weights are within '
                                f'+-{weight_max}: u8 x s8 pairs fit int16')
    return Int8KernelChoice('u8u8', 'x86 without VNNI: u8 x s8 pairs of 8-bit weights can '
                            'saturate int16 (onnxruntime issue 12088)')


class Int8WeightChoice(NamedTuple):
    """How many bits an INT8 file's weights get, and why."""
    bits: int
    reason: str


def int8_weight_choice(cpu: HostCpu, requested: str = 'auto') -> Int8WeightChoice:
    """The weight width of an INT8 file written on ``cpu``: 7 bits on x86 without VNNI,
    where they keep ONNX Runtime's fast u8s8 kernels exact (8-bit weights would need the
    slower u8u8 ones), 8 bits elsewhere. ``requested`` ``'8'`` or ``'7'`` forces one.

    Raises:
        ValueError: ``requested`` is not ``'auto'``, ``'8'`` or ``'7'``.
    """
    widths = [str(bits) for bits in INT8_WEIGHT_MAX]
    if str(requested) not in ('auto', *widths):
        raise ValueError(f'unknown INT8 weight width {requested!r}; choose auto, '
                         f'{" or ".join(widths)}')
    if str(requested) != 'auto':
        return Int8WeightChoice(int(requested), 'requested')
    if cpu.saturates_int16_pairs:
        return Int8WeightChoice(7, 'x86 without VNNI: 7-bit weights keep the fast u8s8 '
                                'kernels exact (pairs within int16)')
    return Int8WeightChoice(8, 'u8 x s8 products accumulate exactly on this CPU')

"""The CPU INT8 runs on, and the INT8 choices accurate on it: without VNNI, x86 kernels add
u8 x s8 pairs in a saturating int16 that 8-bit weights can overflow (onnxruntime issue
12088; docs/int8.md); 7-bit weights or ONNX Runtime's u8u8 kernels do not."""
import os
import platform
from typing import Dict, FrozenSet, NamedTuple, Optional

CPUINFO_PATH = '/proc/cpuinfo'
# /proc/cpuinfo flag -> the name figures are labelled with.
ISA_FLAGS = {'avx2': 'AVX2', 'avx512f': 'AVX-512', 'avx512_vnni': 'AVX512-VNNI',
             'avx_vnni': 'AVX-VNNI', 'amx_int8': 'AMX-INT8'}
VNNI_FLAGS = frozenset({'avx512_vnni', 'avx_vnni'})
X86_ARCHITECTURES = ('x86_64', 'amd64', 'i386', 'i686')
# oneDNN's cap on its instruction sets (OpenVINO and PyTorch obey it, ONNX Runtime does not).
ONEDNN_ISA_CAP_VARIABLE = 'ONEDNN_MAX_CPU_ISA'
# The ONNX Runtime session entry that makes x64 INT8 kernels multiply u8 x u8.
X64_QUANT_PRECISION_KEY = 'session.x64quantprecision'
INT8_KERNELS = ('u8s8', 'u8u8')
# Weight widths of an INT8 file and the largest |weight| each allows.
INT8_WEIGHT_MAX = {8: 127, 7: 64}
UINT8_MAX, INT16_MAX = 255, 32767


class _HostCpu(NamedTuple):
    """What an INT8 figure says about the machine."""
    model_name: str
    isa: tuple  # labels of ISA_FLAGS
    logical_cpus: int
    architecture: str
    threads: Optional[int] = None  # None: the runtime's default
    onednn_isa_cap: Optional[str] = None

    @property
    def has_vnni(self) -> bool:
        return bool({ISA_FLAGS[flag] for flag in VNNI_FLAGS} & set(self.isa))

    @property
    def saturates_int16_pairs(self) -> bool:
        return self.architecture.lower() in X86_ARCHITECTURES and not self.has_vnni

    def describe(self) -> str:
        """One line: model name (architecture; ISA; logical CPUs; threads; oneDNN cap)."""
        threads = ('default threads' if self.threads is None else
                   f'{self.threads} thread{"s" if self.threads != 1 else ""}')
        isa = ', '.join(self.isa) or 'no AVX2 or VNNI'
        cap = (f'; oneDNN (OpenVINO, PyTorch) capped to {self.onednn_isa_cap} by '
               f'{ONEDNN_ISA_CAP_VARIABLE}' if self.onednn_isa_cap else '')
        return (f'{self.model_name} ({self.architecture}; {isa}; {self.logical_cpus} '
                f'logical CPUs; {threads}{cap})')


def _parse_cpuinfo(text: str) -> 'tuple[str, FrozenSet[str]]':
    """The first ``model name`` and ``flags`` of a /proc/cpuinfo text."""
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
    """The text of ``path``, or '' (off Linux)."""
    try:
        with open(path) as stream:
            return stream.read()
    except OSError:
        return ''


def host_cpu(threads: Optional[int] = None, cpuinfo_text: Optional[str] = None,
             architecture: Optional[str] = None) -> _HostCpu:
    """This machine's CPU, measured with ``threads``; or the one a /proc/cpuinfo
    ``cpuinfo_text`` and ``architecture`` (``platform.machine()``) describe."""
    model_name, flags = _parse_cpuinfo(_read(CPUINFO_PATH) if cpuinfo_text is None
                                       else cpuinfo_text)
    isa = tuple(label for flag, label in ISA_FLAGS.items() if flag in flags)
    return _HostCpu(model_name or platform.processor() or 'unknown CPU', isa,
                    os.cpu_count() or 1, architecture or platform.machine(), threads,
                    os.environ.get(ONEDNN_ISA_CAP_VARIABLE) or None)


class _Int8KernelChoice(NamedTuple):
    """Which ONNX Runtime x64 INT8 kernels a session uses, and why."""
    kernels: str
    reason: str

    def session_entries(self) -> Dict[str, str]:
        return {X64_QUANT_PRECISION_KEY: '1'} if self.kernels == 'u8u8' else {}


def int8_kernel_choice(cpu: _HostCpu, requested: str = 'auto',
                       weight_max: Optional[int] = None) -> _Int8KernelChoice:
    """The ONNX Runtime INT8 kernels accurate on ``cpu`` for weights within
    ``+-weight_max`` (None: 8 bits), unless ``requested`` names them; ValueError for an
    unknown name."""
    if requested not in ('auto', *INT8_KERNELS):
        raise ValueError(f'unknown INT8 kernels {requested!r}; choose auto, '
                         f'{" or ".join(INT8_KERNELS)}')
    if requested != 'auto':
        return _Int8KernelChoice(requested, 'requested')
    if cpu.has_vnni:
        return _Int8KernelChoice('u8s8', 'the CPU has VNNI: u8 x s8 accumulates in int32')
    if not cpu.saturates_int16_pairs:
        return _Int8KernelChoice('u8s8', f'{cpu.architecture}: not an x86 CPU')
    if weight_max is not None and 2 * UINT8_MAX * weight_max <= INT16_MAX:
        return _Int8KernelChoice('u8s8', f'x86 without VNNI, but the weights are within '
                                 f'+-{weight_max}: u8 x s8 pairs fit int16')
    return _Int8KernelChoice('u8u8', 'x86 without VNNI: u8 x s8 pairs of 8-bit weights can '
                             'saturate int16 (onnxruntime issue 12088)')


class Int8WeightChoice(NamedTuple):
    """How many bits an INT8 file's weights get, and why."""
    bits: int
    reason: str


def int8_weight_choice(cpu: _HostCpu, requested: str = 'auto') -> Int8WeightChoice:
    """The weight width of an INT8 file written on ``cpu`` (7 bits on x86 without VNNI),
    unless ``requested`` (``'8'`` or ``'7'``) names it; ValueError for another width."""
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

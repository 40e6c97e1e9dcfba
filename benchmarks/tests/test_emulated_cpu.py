"""The CPU as a process under as_avx2_only.py sees it (lab.emulated_cpu): the preloaded
library found in the process's memory map makes the CPU AVX2-only, the rest of its ISA
named as hidden, and the package's INT8 choice then gives the AVX2-only recipe. The memory
maps and /proc/cpuinfo excerpts are written here as Linux prints them."""
from lab.avx2_only_library import AVX2_ONLY_LIBRARY
from lab.emulated_cpu import seen_cpu
from mmrepvgg.deploy._host_cpu import int8_kernel_choice, int8_weight_choice

VNNI_CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni
"""
MAPS = ('7f00-7f10 r-xp 00000000 00:20 12 /tmp/tmpab12/' + AVX2_ONLY_LIBRARY + '\n'
        '7f20-7f30 r-xp 00000000 00:20 13 /usr/lib/x86_64-linux-gnu/libc.so.6\n')


def test_a_process_under_the_avx2_only_library_is_described_as_avx2_only(monkeypatch):
    monkeypatch.delenv('ONEDNN_MAX_CPU_ISA', raising=False)
    seen = seen_cpu(1, cpuinfo_text=VNNI_CPUINFO, architecture='x86_64', maps_text=MAPS)
    assert seen.cpu.isa == ('AVX2',) and seen.hidden_isa == ('AVX-512', 'AVX512-VNNI')
    assert not seen.cpu.has_vnni and seen.cpu.saturates_int16_pairs
    assert seen.describe() == (
        'Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz (x86_64; AVX2; '
        f'{seen.cpu.logical_cpus} logical CPUs; 1 thread; AVX-512, AVX512-VNNI hidden from '
        'CPUID: AVX2-only CPU emulated)')
    assert seen.as_dict()['hidden_isa'] == ['AVX-512', 'AVX512-VNNI']
    assert seen.as_dict()['isa'] == ['AVX2']
    assert seen.as_dict()['vnni'] is False and seen.as_dict()['threads'] == 1
    assert (int8_weight_choice(seen.cpu).bits, int8_kernel_choice(seen.cpu).kernels) == (
        7, 'u8u8')


def test_the_library_is_found_also_once_its_file_is_deleted():
    deleted = MAPS.replace(AVX2_ONLY_LIBRARY + '\n', AVX2_ONLY_LIBRARY + ' (deleted)\n')
    assert seen_cpu(cpuinfo_text=VNNI_CPUINFO, maps_text=deleted).hidden_isa


def test_a_library_of_another_name_or_none_hides_nothing():
    for other in (MAPS.replace(AVX2_ONLY_LIBRARY, 'libother.so'), ''):
        seen = seen_cpu(1, cpuinfo_text=VNNI_CPUINFO, architecture='x86_64', maps_text=other)
        assert seen.cpu.isa == ('AVX2', 'AVX-512', 'AVX512-VNNI') and not seen.hidden_isa
        assert 'hidden' not in seen.describe()

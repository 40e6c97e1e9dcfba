"""The CPU beside every INT8 figure, and the ONNX Runtime INT8 kernels and weight width
chosen for it: on x86 without VNNI 7-bit weights (their u8s8 pairs fit int16) or, for 8-bit
weights, the u8u8 kernels (session.x64quantprecision); u8s8 and 8 bits elsewhere; all
accurate."""
import os

import numpy as np
import pytest

from mmrepvgg.deploy import onnx_runtime
from mmrepvgg.deploy._host_cpu import _parse_cpuinfo as parse_cpuinfo
from mmrepvgg.deploy._host_cpu import (X64_QUANT_PRECISION_KEY, host_cpu, int8_kernel_choice,
                                       int8_weight_choice)
from mmrepvgg.deploy._onnx_eval import preprocessed_batches
from mmrepvgg.deploy.onnx_runtime import OnnxRuntimeModel
from mmrepvgg.engine import load_repvgg_config

from conftest import REPO_ROOT, int8_conv_weights, load_tool

DIGITS_CONFIG = os.path.join(REPO_ROOT, 'configs/digits/repvgg-A0_digits.py')

# Excerpts of /proc/cpuinfo as such machines print it (one processor each).
AVX2_ONLY_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2
"""
VNNI_CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni
"""


def test_cpuinfo_gives_the_model_name_and_the_isa_that_matters():
    name, flags = parse_cpuinfo(VNNI_CPUINFO)
    assert name == 'Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz'
    assert {'avx2', 'avx512f', 'avx512_vnni'} <= flags
    cpu = host_cpu(threads=1, cpuinfo_text=VNNI_CPUINFO, architecture='x86_64')
    assert cpu.isa == ('AVX2', 'AVX-512', 'AVX512-VNNI') and cpu.has_vnni
    assert cpu.describe().startswith('Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz '
                                     '(x86_64; AVX2, AVX-512, AVX512-VNNI;')
    assert cpu.describe().endswith('; 1 thread)')
    assert cpu.has_vnni and cpu.threads == 1


def test_a_onednn_isa_cap_is_named_beside_the_figures(monkeypatch):
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX2')
    cpu = host_cpu(threads=1, cpuinfo_text=VNNI_CPUINFO, architecture='x86_64')
    assert cpu.describe().endswith(
        '1 thread; oneDNN (OpenVINO, PyTorch) capped to AVX2 by ONEDNN_MAX_CPU_ISA)')
    assert cpu.onednn_isa_cap == 'AVX2'
    monkeypatch.delenv('ONEDNN_MAX_CPU_ISA')
    assert host_cpu(cpuinfo_text=VNNI_CPUINFO).onednn_isa_cap is None


@pytest.mark.parametrize('cpuinfo, architecture, kernels', [
    (AVX2_ONLY_CPUINFO, 'x86_64', 'u8u8'),  # u8 x s8 pairs saturate int16: the safe path
    (VNNI_CPUINFO, 'x86_64', 'u8s8'),
    ('model name\t: Neoverse-N1\nflags\t\t: fp asimd\n', 'aarch64', 'u8s8'),
])
def test_kernel_choice_follows_the_cpu(cpuinfo, architecture, kernels):
    cpu = host_cpu(cpuinfo_text=cpuinfo, architecture=architecture)
    choice = int8_kernel_choice(cpu)
    assert choice.kernels == kernels and choice.reason
    assert (X64_QUANT_PRECISION_KEY in choice.session_entries()) == (kernels == 'u8u8')


@pytest.mark.parametrize('cpuinfo, architecture, bits', [
    (AVX2_ONLY_CPUINFO, 'x86_64', 7),
    (VNNI_CPUINFO, 'x86_64', 8),
    ('model name\t: Neoverse-N1\nflags\t\t: fp asimd\n', 'aarch64', 8),
])
def test_weight_width_follows_the_cpu_and_a_request_overrides_it(cpuinfo, architecture, bits):
    cpu = host_cpu(cpuinfo_text=cpuinfo, architecture=architecture)
    assert int8_weight_choice(cpu).bits == bits
    assert int8_weight_choice(cpu, '8').bits == 8 and int8_weight_choice(cpu, '7').bits == 7
    with pytest.raises(ValueError, match='choose auto, 8 or 7'):
        int8_weight_choice(cpu, '6')


@pytest.mark.parametrize('weight_max, kernels', [
    (64, 'u8s8'),    # 2 x 255 x 64 = 32640: every pair fits int16
    (65, 'u8u8'),    # 2 x 255 x 65 = 33150 does not
    (127, 'u8u8'),
    (None, 'u8u8'),  # weights not known: assume 8 bits
])
def test_without_vnni_the_kernels_follow_the_largest_weight(weight_max, kernels):
    avx2_host = host_cpu(cpuinfo_text=AVX2_ONLY_CPUINFO, architecture='x86_64')
    assert int8_kernel_choice(avx2_host, weight_max=weight_max).kernels == kernels
    vnni_host = host_cpu(cpuinfo_text=VNNI_CPUINFO, architecture='x86_64')
    assert int8_kernel_choice(vnni_host, weight_max=127).kernels == 'u8s8'


def test_a_kernel_request_overrides_the_cpu_and_a_typo_is_refused():
    avx2_host = host_cpu(cpuinfo_text=AVX2_ONLY_CPUINFO, architecture='x86_64')
    assert int8_kernel_choice(avx2_host, 'u8s8').kernels == 'u8s8'
    with pytest.raises(ValueError, match='u8s8 or u8u8'):
        int8_kernel_choice(avx2_host, 'u8u9')


def test_this_machine_is_described_from_its_own_cpuinfo():
    cpu = host_cpu()
    assert cpu.model_name and cpu.logical_cpus == os.cpu_count()
    if os.path.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as stream:
            assert ('avx2' in stream.read().split()) == ('AVX2' in cpu.isa)


@pytest.mark.parametrize('kernels', ['u8s8', 'u8u8'])
def test_the_session_carries_the_chosen_kernels(kernels, tmp_path):
    from test_int8 import _linear_model
    model = OnnxRuntimeModel(_linear_model(tmp_path / 'm.onnx', [1, 0, 0, 1]),
                             int8_kernels=kernels)
    options = model.session.get_session_options()
    if kernels == 'u8u8':
        assert options.get_session_config_entry(X64_QUANT_PRECISION_KEY) == '1'
    else:
        with pytest.raises(RuntimeError, match='does not have'):  # never set
            options.get_session_config_entry(X64_QUANT_PRECISION_KEY)


def test_int8_is_accurate_on_both_kernel_paths_and_with_7_bit_weights(
        digits_workspace, digits_train_checkpoint, tmp_path, monkeypatch, capsys):
    """The forced non-VNNI path (u8u8) and the VNNI-style path (u8s8) run the same INT8
    file: both stay close to FP32, and (integer arithmetic either way, no overflow in
    u8u8) agree with each other far more closely than with FP32. The 7-bit file a CPU
    without VNNI gets holds weights within +-64 (no int16 pair can saturate: 2 x 255 x 64
    < 32768) and is as close to FP32; on such a CPU its session keeps the u8s8 kernels."""
    monkeypatch.chdir(digits_workspace)
    pytorch2onnx = load_tool('tools/deployment/pytorch2onnx.py')
    # The recipe as given, no FP32 fallback: every conv of both files is compared.
    every_conv_int8 = ['accuracy_bound_points=none']
    fp32_path, int8_path = str(tmp_path / 'fp32.onnx'), str(tmp_path / 'int8.onnx')
    seven_bit_path = str(tmp_path / 'int8_7bit.onnx')
    assert pytorch2onnx.main([DIGITS_CONFIG, digits_train_checkpoint, fp32_path]) == 0
    assert pytorch2onnx.main([DIGITS_CONFIG, digits_train_checkpoint, int8_path,
                              '--quantize', 'int8', '--calib-images', '64',
                              '--check-images', '32', '--int8-recipe', 'int8_kernels=u8u8',
                              *every_conv_int8]) == 0
    assert pytorch2onnx.main([DIGITS_CONFIG, digits_train_checkpoint, seven_bit_path,
                              '--quantize', 'int8', '--calib-images', '64',
                              '--check-images', '32', '--int8-recipe', 'weight_bits=7',
                              *every_conv_int8]) == 0
    assert 'per-channel 7-bit weights (requested)' in capsys.readouterr().out
    eight_bit, seven_bit = int8_conv_weights(int8_path), int8_conv_weights(seven_bit_path)
    assert len(eight_bit) == len(seven_bit) > 10
    assert max(np.abs(weight.astype(int)).max() for weight in eight_bit) == 127
    assert max(np.abs(weight.astype(int)).max() for weight in seven_bit) == 64
    images = next(preprocessed_batches(load_repvgg_config(DIGITS_CONFIG),
                                       'test_dataloader', 64, shuffle=False)).images
    fp32 = OnnxRuntimeModel(fp32_path)(images)
    scale = np.abs(fp32).max()
    int8 = {kernels: OnnxRuntimeModel(int8_path, int8_kernels=kernels)(images)
            for kernels in ('u8s8', 'u8u8')}
    int8['7-bit'] = OnnxRuntimeModel(seven_bit_path)(images)
    for logits in int8.values():
        assert np.abs(logits - fp32).max() / scale < 0.3
        assert np.mean(logits.argmax(1) == fp32.argmax(1)) >= 0.85
    assert np.abs(int8['u8s8'] - int8['u8u8']).max() / scale < 1e-3

    avx2_host = host_cpu(cpuinfo_text=AVX2_ONLY_CPUINFO, architecture='x86_64')
    monkeypatch.setattr(onnx_runtime, 'host_cpu', lambda threads=None: avx2_host)
    for path, x64_entry in ((seven_bit_path, False), (int8_path, True), (fp32_path, False)):
        options = OnnxRuntimeModel(path).session.get_session_options()
        if x64_entry:
            assert options.get_session_config_entry(X64_QUANT_PRECISION_KEY) == '1'
        else:
            with pytest.raises(RuntimeError, match='does not have'):
                options.get_session_config_entry(X64_QUANT_PRECISION_KEY)

"""benchmarks/as_avx2_only.py runs a command as on an AVX2-only x86 CPU: the
libraries in it and in its children see no AVX-512, VNNI or AMX (references: PyTorch's and
numpy's own CPU detection), ONNX Runtime then runs the u8s8 kernels that add pairs of
products in saturating int16 (reference: the integer sums computed here), the lab names
the emulation beside its figures and chooses the AVX2 recipe, and bad input is one line.
Needs Linux x86-64 with CPUID faulting and a C compiler, as the tool says."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from conftest import REPO_ROOT, int8_conv_weights

TOOL = os.path.join(REPO_ROOT, 'benchmarks/as_avx2_only.py')
DIGITS_CONFIG = os.path.join(REPO_ROOT, 'configs/digits/repvgg-A0_digits.py')


def _cpu_flags() -> set:
    try:
        with open('/proc/cpuinfo') as stream:
            return set(next(line for line in stream if line.startswith('flags')).split())
    except (OSError, StopIteration):
        return set()


FLAGS = _cpu_flags()
pytestmark = pytest.mark.skipif(
    not {'cpuid_fault', 'avx2'} <= FLAGS or not (shutil.which('cc') or shutil.which('gcc')),
    reason='the emulation needs an x86 CPU with AVX2 and CPUID faulting, and a C compiler')


def run_as_avx2_only(*command: str, cwd=None, **environment) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, TOOL, *command], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env={**os.environ, **environment})


def python_as_avx2_only(code: str, *arguments: str) -> str:
    run = run_as_avx2_only(sys.executable, '-c', code, *arguments)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_the_command_and_its_children_see_avx2_and_no_avx512_vnni_or_amx():
    probe = ('import torch, numpy\n'
             'core = getattr(numpy, "_core", None) or numpy.core\n'  # numpy.core before 2
             'features = core._multiarray_umath.__cpu_features__\n'
             'print(torch.backends.cpu.get_cpu_capability(), features["AVX2"], '
             'features["AVX512F"], features["AVX512_ICL"])\n')
    child = f'import subprocess, sys; subprocess.run([sys.executable, "-c", {probe!r}])'
    assert python_as_avx2_only(probe).split() == ['AVX2', 'True', 'False', 'False']
    assert python_as_avx2_only(child).split() == ['AVX2', 'True', 'False', 'False']


# MatMulInteger of a uint8 row by int8 columns, run by ONNX Runtime in the emulated process;
# prints the int32 result and the same with the u8u8 kernels (session.x64quantprecision).
MATMUL_SCRIPT = '''
import sys
import numpy as np, onnxruntime
model_path, inputs_path = sys.argv[1:]
inputs = np.load(inputs_path)
for u8u8 in (False, True):
    options = onnxruntime.SessionOptions()
    if u8u8:
        options.add_session_config_entry('session.x64quantprecision', '1')
    session = onnxruntime.InferenceSession(model_path, options,
                                           providers=['CPUExecutionProvider'])
    print(' '.join(map(str, session.run(None, {'inputs': inputs})[0].ravel())))
'''


def _matmul_integer_file(weights: np.ndarray, path) -> str:
    graph = helper.make_graph(
        [helper.make_node('MatMulInteger', ['inputs', 'weights'], ['sums'])], 'pairs',
        [helper.make_tensor_value_info('inputs', TensorProto.UINT8, [1, weights.shape[0]])],
        [helper.make_tensor_value_info('sums', TensorProto.INT32, [1, weights.shape[1]])],
        [numpy_helper.from_array(weights, 'weights')])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)]), path)
    return str(path)


@pytest.mark.skipif(onnxruntime.__version__.startswith('1.19.'), reason=(
    'onnxruntime 1.19 aborts in this MatMulInteger on an AVX2-only CPU (a failed bounds '
    'assertion); newer onnxruntime runs it'))
def test_onnxruntime_u8s8_saturates_int16_pairs_of_8_bit_weights_and_is_exact_otherwise(
        tmp_path):
    """Column 0 holds 8-bit weights (127: a pair of 255 x 127 products is 64770, past
    int16), column 1 7-bit ones (64: 32640 fits), column 2 mixed signs. The u8s8 kernels
    of an AVX2-only CPU clip each pair to int16; the u8u8 kernels, and 7-bit weights, are
    exact."""
    depth = 64
    weights = np.stack([np.full(depth, 127), np.full(depth, 64),
                        np.tile([127, -127], depth // 2)], axis=1).astype(np.int8)
    inputs = np.full((1, depth), 255, np.uint8)
    exact = inputs.astype(np.int64) @ weights.astype(np.int64)
    products = inputs.astype(np.int64).T * weights.astype(np.int64)  # (depth, columns)
    pair_sums = products[0::2] + products[1::2]
    saturated = np.clip(pair_sums, -32768, 32767).sum(axis=0)
    assert saturated[0] < exact[0, 0] and (saturated[1:] == exact[0, 1:]).all()
    np.save(tmp_path / 'inputs.npy', inputs)
    u8s8, u8u8 = python_as_avx2_only(MATMUL_SCRIPT, _matmul_integer_file(
        weights, tmp_path / 'pairs.onnx'), str(tmp_path / 'inputs.npy')).splitlines()
    assert [int(value) for value in u8s8.split()] == saturated.tolist()
    assert [int(value) for value in u8u8.split()] == exact[0].tolist()


# A QLinearConv of uint8 inputs (scale 1, zero point 0) by int8 weights (scale 1) whose
# int32 sums are requantized to uint8 around 128: run by ONNX Runtime in the emulated
# process, it prints the uint8 outputs.
QLINEARCONV_SCRIPT = """
import sys
import numpy as np, onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])
print(' '.join(map(str, session.run(None, {'inputs': np.load(sys.argv[2])})[0].ravel())))
"""
SUMS_PER_LEVEL = 8192.0  # the QLinearConv's output scale: int32 sum -> uint8 step


def _qlinearconv_file(weights: np.ndarray, input_shape, path) -> str:
    def constant(value, name, dtype):
        return numpy_helper.from_array(np.array(value, dtype=dtype), name)
    node = helper.make_node('QLinearConv', ['inputs', 'input_scale', 'input_zero', 'weights',
                                            'weight_scale', 'weight_zero', 'output_scale',
                                            'output_zero'], ['outputs'])
    graph = helper.make_graph(
        [node], 'conv', [helper.make_tensor_value_info('inputs', TensorProto.UINT8,
                                                       list(input_shape))],
        [helper.make_tensor_value_info('outputs', TensorProto.UINT8, None)],
        [numpy_helper.from_array(weights, 'weights'), constant(1.0, 'input_scale', np.float32),
         constant(0, 'input_zero', np.uint8), constant(1.0, 'weight_scale', np.float32),
         constant(0, 'weight_zero', np.int8),
         constant(SUMS_PER_LEVEL, 'output_scale', np.float32),
         constant(128, 'output_zero', np.uint8)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)]), path)
    return str(path)


def test_the_kernel_emulation_pairs_products_as_onnx_runtimes_avx2_conv_does(tmp_path):
    """lab.kernel_emulation's saturated integer conv, against ONNX Runtime's
    own u8s8 conv on the emulated AVX2-only CPU. Three input channels (an odd reduction)
    and weights of +-127 chosen so that the pair order decides which pairs saturate: in
    (tap, channel) order, channel 0 pairs with channel 1 (cancelling) or with the next
    tap's channel 0 (adding)."""
    import torch
    from torch import nn

    from lab.kernel_emulation import integer_conv
    from lab.adaround import _FakeQuantizedConv as FakeQuantizedConv
    pattern = np.array([[127, -127, 127], [127, 127, 127], [127, -127, 0]], np.int8)
    weights = np.repeat(np.repeat(pattern[:, :, None, None], 3, axis=2), 3, axis=3)
    inputs = np.random.default_rng(0).integers(200, 256, (1, 3, 5, 5), dtype=np.uint8)
    np.save(tmp_path / 'inputs.npy', inputs)
    printed = python_as_avx2_only(QLINEARCONV_SCRIPT, _qlinearconv_file(
        weights, inputs.shape, tmp_path / 'conv.onnx'), str(tmp_path / 'inputs.npy'))
    onnxruntime_avx2 = [int(value) for value in printed.split()]

    conv = nn.Conv2d(3, 3, 3, bias=False)
    conv.weight.data = torch.from_numpy(weights.astype(np.float32))  # scales of 1
    wrapper = FakeQuantizedConv(conv)
    wrapper.input_max = torch.tensor(255.0)  # uint8 levels of 1, zero point 0
    wrapper.observing = False

    def requantized(saturate_pairs: bool) -> list:
        sums = integer_conv(wrapper, torch.from_numpy(inputs.astype(np.float32)),
                            saturate_pairs)[0]
        return torch.clamp(torch.round(sums / SUMS_PER_LEVEL) + 128, 0, 255).int(
            ).flatten().tolist()
    assert onnxruntime_avx2 == requantized(saturate_pairs=True)
    assert onnxruntime_avx2 != requantized(saturate_pairs=False)


LAB_ENVIRONMENT = dict(PYTHONPATH=os.pathsep.join(filter(None, [
    os.path.join(REPO_ROOT, 'benchmarks'), os.environ.get('PYTHONPATH')])))
SEEN_CPU_SCRIPT = """
from lab.emulated_cpu import seen_cpu
from mmrepvgg.deploy._host_cpu import int8_kernel_choice, int8_weight_choice
seen = seen_cpu(1)
print(seen.describe())
print(int8_weight_choice(seen.cpu).bits, int8_kernel_choice(seen.cpu).kernels)
"""


def test_the_lab_sees_the_emulated_cpu_and_gets_its_int8_recipe():
    """What the lab's instruments print beside their figures and which recipe their INT8
    rows get in the emulated process: the AVX2-only CPU's 7-bit weights, and the exact
    u8u8 kernels for 8-bit weights."""
    run = run_as_avx2_only(sys.executable, '-c', SEEN_CPU_SCRIPT, **LAB_ENVIRONMENT)
    assert run.returncode == 0, run.stderr[-3000:]
    line, recipe = run.stdout.strip().splitlines()[-2:]
    assert 'AVX2;' in line and 'hidden from CPUID: AVX2-only CPU emulated' in line
    assert 'AVX512-VNNI;' not in line.partition('hidden')[0]
    assert recipe.split() == ['7', 'u8u8']


@pytest.mark.slow  # an INT8 export with its agreement check, in the emulated process
def test_int8_export_of_7_bit_weights_is_accurate_on_an_avx2_only_cpu(
        digits_workspace, digits_train_checkpoint, tmp_path):
    """The package's export, run in the emulated process with the weights the lab chooses
    there (the package reads /proc/cpuinfo, which still names VNNI): weights within +-64,
    which ONNX Runtime's saturating u8s8 kernels compute exactly."""
    output = tmp_path / 'int8.onnx'
    run = run_as_avx2_only(sys.executable, os.path.join(REPO_ROOT,
                                                        'tools/deployment/pytorch2onnx.py'),
                           DIGITS_CONFIG, digits_train_checkpoint, str(output), '--quantize',
                           'int8', '--int8-recipe', 'weight_bits=7', '--calib-images', '64',
                           '--check-images', '96', cwd=digits_workspace, OMP_NUM_THREADS='1')
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'per-channel 7-bit weights' in run.stdout
    int8_weights = int8_conv_weights(output)
    assert len(int8_weights) > 10
    assert max(np.abs(weights.astype(int)).max() for weights in int8_weights) == 64
    agreement = re.search(r'agreement on 96 held-out test images: ([\d.]+) %', run.stdout)
    assert agreement and float(agreement.group(1)) >= 85


@pytest.mark.parametrize('arguments, environment, status, message', [
    ((), {}, 2, 'name the command to run'),
    (('--',), {}, 2, 'name the command to run'),
    (('no-such-command-here',), {}, 127, "cannot run 'no-such-command-here'"),
    (('true',), {'CC': '/no/such/compiler'}, 1, 'install gcc or set CC'),
    (('true',), {'CC': 'true'}, 1, 'was not loaded (is CC a C compiler?)'),  # wrote nothing
])
def test_bad_input_is_one_line_and_a_nonzero_exit(arguments, environment, status, message):
    run = run_as_avx2_only(*arguments, **environment)
    assert run.returncode == status
    assert message in run.stderr.strip().splitlines()[-1] and not run.stdout
    lines = [line for line in run.stderr.strip().splitlines() if not line.startswith('usage')]
    assert len(lines) == 1


def test_the_command_exit_status_is_passed_on():
    assert run_as_avx2_only(sys.executable, '-c', 'raise SystemExit(7)').returncode == 7
    # '--' may end the tool's own options; the command's options are the command's.
    assert run_as_avx2_only('--', sys.executable, '-c', 'raise SystemExit(5)').returncode == 5
    run = run_as_avx2_only(sys.executable, '-c', 'import sys; print(sys.argv[1:])', '--x', '-h')
    assert run.returncode == 0 and run.stdout.strip() == "['--x', '-h']"

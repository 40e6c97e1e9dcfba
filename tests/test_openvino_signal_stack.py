"""OpenVINO's CPU plugin gives a thread an alternate signal stack and, when it is destroyed,
may put back one it has already unmapped (mmrepvgg/deploy/openvino_runtime.py says how). Models
compiled or quantized through this package leave the calling thread a usable stack, in any
order of destruction and on any thread: a Python signal handler still runs afterwards.
Each case runs in a fresh interpreter, since a broken stack kills the process at its next
signal (a test worker died that way)."""
import subprocess
import sys

import pytest
import torch

pytest.importorskip('openvino')  # the [openvino] extra (requirements/tests.txt)

from mmrepvgg.deploy.onnx_export import export_onnx  # noqa: E402
from mmrepvgg.models import build_model, repvgg_classifier_cfg  # noqa: E402

from conftest import needs_torch_for_nncf  # noqa: E402

# Each case makes OpenVINO models through the package, drops them, then has a Python
# handler catch a signal; faulthandler on, as in a pytest worker.
CASE_SCRIPT = '''
import gc, os, signal, sys, threading
import numpy as np
from mmrepvgg.deploy.openvino_runtime import _quantize_ir as quantize_ir
from mmrepvgg.deploy.openvino_runtime import OpenVINOModel
onnx_path, case = sys.argv[1:]
images = np.zeros((2, 3, 32, 32), np.float32)
if case == 'dropped in the order they were made':
    first, second = OpenVINOModel(onnx_path), OpenVINOModel(onnx_path)
    first(images), second(images)
    del first; gc.collect()
    del second; gc.collect()
elif case == 'dropped on another thread':
    models = [OpenVINOModel(onnx_path)]
    dropper = threading.Thread(target=models.clear)
    dropper.start(); dropper.join(); gc.collect()
elif case == 'quantized by NNCF, then both dropped':
    fp32 = OpenVINOModel(onnx_path)
    int8 = OpenVINOModel(quantize_ir(onnx_path, [images]))
    del fp32; gc.collect()
    del int8; gc.collect()
caught = []
signal.signal(signal.SIGUSR1, lambda number, frame: caught.append(number))
os.kill(os.getpid(), signal.SIGUSR1)
print('caught', caught == [signal.SIGUSR1])
'''


@pytest.fixture(scope='module')
def small_onnx_path(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(repvgg_classifier_cfg(
        dict(num_blocks=(1, 1, 1, 1), width_factor=(0.25, 0.25, 0.25, 0.25)),
        num_classes=10))
    path = str(tmp_path_factory.mktemp('signal_stack') / 'small.onnx')
    return export_onnx(model, path, (1, 3, 32, 32), dynamic_batch=True).path


@pytest.mark.parametrize('case', ['dropped in the order they were made',
                                  'dropped on another thread',
                                  pytest.param('quantized by NNCF, then both dropped',
                                               marks=needs_torch_for_nncf)])
def test_a_python_signal_handler_runs_after_openvino_models_are_dropped(small_onnx_path,
                                                                        case):
    run = subprocess.run([sys.executable, '-X', 'faulthandler', '-c', CASE_SCRIPT,
                          small_onnx_path, case], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, f'exit {run.returncode}: {run.stderr[-3000:]}'
    assert run.stdout.splitlines()[-1] == 'caught True'

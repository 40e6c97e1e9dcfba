"""ONNX Runtime behind one adapter, used by the checks, the APIs, the tools and the benchmark."""
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from google.protobuf.message import DecodeError
from torch import Tensor, nn

from .._utils import require
from ._host_cpu import host_cpu, int8_kernel_choice

onnx = require('onnx', 'onnx')
onnxruntime = require('onnxruntime', 'onnx')

# What ONNX Runtime raises for a file it cannot load (not a model, a broken graph).
LOAD_ERRORS = (onnxruntime.capi.onnxruntime_pybind11_state.Fail,
               onnxruntime.capi.onnxruntime_pybind11_state.InvalidGraph,
               onnxruntime.capi.onnxruntime_pybind11_state.InvalidProtobuf)


def _largest_int8_weight(path: str) -> Optional[int]:
    """The largest ``|int8 initializer|``: 0 for FP32, None for no ONNX file (the session
    then says why)."""
    try:
        graph = onnx.load(path).graph
    except DecodeError:
        return None
    largest = [int(np.abs(onnx.numpy_helper.to_array(tensor).astype(np.int16)).max())
               for tensor in graph.initializer
               if tensor.data_type == onnx.TensorProto.INT8]
    return max(largest, default=0)


def fixed_image_size(dims) -> Optional[Tuple[int, int]]:
    """(H, W) of an ``(N, C, H, W)`` input whose H and W are integers, else None."""
    dims = list(dims)
    if len(dims) != 4 or not all(isinstance(side, int) for side in dims[2:]):
        return None
    return dims[2], dims[3]


class OnnxRuntimeModel(nn.Module):
    """An ONNX file run on the CPU like the PyTorch model: images ``(N, C, H, W)`` float32
    in (tensor or array), the first output out (the same type); ``input_size``: ``(H, W)``
    fixed in the file, or None. INT8 ops use the kernels accurate on this CPU
    (``kernel_choice``) unless ``int8_kernels`` (``'u8s8'`` or ``'u8u8'``) names them."""

    def __init__(self, path: str, threads: Optional[int] = None, int8_kernels: str = 'auto'):
        super().__init__()
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        # Idle workers block instead of spinning: the cores go to whatever runs next.
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        cpu = host_cpu(threads)
        # Only x86 without VNNI needs to know the weights (7-bit ones keep u8s8 exact).
        weight_max = (_largest_int8_weight(path)
                      if int8_kernels == 'auto' and cpu.saturates_int16_pairs else None)
        self.kernel_choice = int8_kernel_choice(cpu, int8_kernels, weight_max)
        for key, value in self.kernel_choice.session_entries().items():
            options.add_session_config_entry(key, value)
        self.session = onnxruntime.InferenceSession(path, options,
                                                    providers=['CPUExecutionProvider'])
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_size = fixed_image_size(model_input.shape)

    def run(self, images: np.ndarray) -> List[np.ndarray]:
        """Every output of the file for ``images`` ``(N, C, H, W)`` float32."""
        return [np.asarray(output) for output in
                self.session.run(None, {self.input_name: images})]

    def forward(self, images: Union[Tensor, np.ndarray]) -> Union[Tensor, np.ndarray]:
        if isinstance(images, np.ndarray):
            return self.run(images.astype(np.float32, copy=False))[0]
        array = images.detach().float().cpu().contiguous().numpy()
        return torch.from_numpy(self.run(array)[0])

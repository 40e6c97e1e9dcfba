"""INT8 inside PyTorch: PT2E static quantization of the deploy form with torchao's x86
Inductor quantizer (the ``[torch-int8]`` extra), compiled with frozen weights to oneDNN's
integer convolutions (each new input shape compiles; docs/int8.md)."""
from typing import Any, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch._inductor import config as inductor_config

from ..models import reparameterize_model
from .._utils import require
from ._host_cpu import host_cpu


class TorchInt8Error(RuntimeError):
    """This PyTorch cannot quantize with PT2E, or the input does not fit the model."""


class PT2EInt8Model(nn.Module):
    """Images ``(N, C, H, W)`` float32 in, the deploy model's outputs out; ``batch_size``:
    the only one it takes (None: any); ``notices``: e.g. why the batch is fixed."""

    def __init__(self, runner: Any, batch_size: Optional[int], notices: List[str]):
        super().__init__()
        # The compiled graph holds the quantized weights; kept in a tuple so that nn.Module
        # does not register it (its state is not a checkpoint).
        self._runner = (runner, )
        self.batch_size = batch_size
        self.notices = notices

    def forward(self, images: Tensor) -> Any:
        if self.batch_size is not None and images.shape[0] != self.batch_size:
            raise TorchInt8Error(
                f'this INT8 model was exported for batches of {self.batch_size} images, '
                f'got {images.shape[0]}; pass batches of {self.batch_size}')
        # Inductor's x86 INT8 lowering reads the global ``freezing`` when a call compiles,
        # not torch.compile's options: set for the call only.
        with torch.no_grad(), inductor_config.patch(freezing=True):
            return self._runner[0](images.float())


def _export(deploy_model: nn.Module, example: Tensor, dynamic_batch: bool,
            notices: List[str]):
    """``(exported module, fixed batch size or None)``; a notice why it is fixed."""
    if dynamic_batch:
        try:
            batch = torch.export.Dim('batch', min=1)
            # torch.export specialises a dimension of size 1: show it a batch of two.
            exported = torch.export.export(
                deploy_model, (example.expand(max(2, len(example)), *example.shape[1:]), ),
                dynamic_shapes=({0: batch}, ))
            return exported.module(), None
        except Exception as error:  # torch.export raises many types; all mean: static
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ''
            notices.append(f'torch.export could not make the batch dimension dynamic '
                           f'({type(error).__name__}: {reason}); the INT8 model takes '
                           f'batches of {len(example)} only')
    return torch.export.export(deploy_model, (example, )).module(), len(example)


def quantize_pt2e_model(model: nn.Module,
                        calibration_batches: Sequence[Union[Tensor, np.ndarray]],
                        dynamic_batch: bool = True,
                        reduce_range: Optional[bool] = None) -> PT2EInt8Model:
    """A fused copy of ``model`` quantized to static INT8 with PT2E on
    ``calibration_batches`` ``(N, C, H, W)`` (preprocessed training images; the first is
    the export's example), compiled by Inductor; dynamic in the batch where asked and
    torch.export can. ``reduce_range``: 7-bit activations (None: on x86 without VNNI,
    whose u8 x s8 pairs saturate int16). Raises TorchInt8Error (no usable torch.export),
    MissingExtraError (no torchao) or ValueError (no calibration batches)."""
    if not hasattr(getattr(torch, 'export', None), 'Dim'):
        raise TorchInt8Error(
            f'PyTorch INT8 (PT2E) needs torch.export with torch.export.Dim (torch >= 2.2), '
            f'this is torch {torch.__version__}; upgrade torch or use the ONNX Runtime or '
            'OpenVINO INT8 backends')
    quantize_pt2e = require('torchao.quantization.pt2e.quantize_pt2e', 'torch-int8')
    x86_quantizer = require('torchao.quantization.pt2e.quantizer.x86_inductor_quantizer',
                            'torch-int8')
    batches = [torch.as_tensor(batch, dtype=torch.float32) for batch in calibration_batches]
    if not batches or any(batch.dim() != 4 or not len(batch) for batch in batches):
        raise ValueError('PT2E INT8 needs calibration_batches: a few non-empty batches '
                         '(N, C, H, W) of real, preprocessed training images (the '
                         'activation ranges come from them)')
    if reduce_range is None:
        reduce_range = host_cpu().saturates_int16_pairs
    deploy_model = reparameterize_model(model)
    notices: List[str] = []
    exported, batch_size = _export(deploy_model, batches[0], dynamic_batch, notices)
    if batch_size is not None:
        # A static graph takes one batch size: the images regrouped, a short tail left out.
        batches = [batch for batch in torch.cat(batches).split(batch_size)
                   if len(batch) == batch_size]
    quantizer = x86_quantizer.X86InductorQuantizer().set_global(
        x86_quantizer.get_default_x86_inductor_quantization_config(
            reduce_range=reduce_range))
    prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in batches:
            prepared(batch)
    converted = quantize_pt2e.convert_pt2e(prepared)
    # Compiled with freezing (see PT2EInt8Model.forward): the int8 weights become
    # constants that Inductor packs for oneDNN once.
    runner = torch.compile(converted)
    return PT2EInt8Model(runner, batch_size, notices)

"""Realistic random model state, for checks and benchmarks without trained weights.

Freshly initialised BNs are the identity (mean 0, var 1, gamma 1, beta 0) and would hide
a fusion that ignores them; :func:`randomize_batch_norms_` gives every BN the kind of
statistics a trained network has.
"""
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def _normal(shape, std: float, generator: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64) * std


def _uniform(shape, low: float, high: float, generator: torch.Generator) -> Tensor:
    return torch.empty(shape, dtype=torch.float64).uniform_(low, high, generator=generator)


@torch.no_grad()
def randomize_batch_norms_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random running statistics and affine parameters, in place.

    running_mean ~ N(0, 0.5), running_var ~ U(0.5, 2), gamma ~ U(0.5, 1.5),
    beta ~ N(0, 0.2), drawn from a generator seeded with ``seed``.
    """
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if not isinstance(module, _BatchNorm):
            continue
        shape = module.running_mean.shape
        module.running_mean.copy_(_normal(shape, 0.5, generator))
        module.running_var.copy_(_uniform(shape, 0.5, 2.0, generator))
        if module.weight is not None:
            module.weight.copy_(_uniform(shape, 0.5, 1.5, generator))
            module.bias.copy_(_normal(shape, 0.2, generator))
    return model

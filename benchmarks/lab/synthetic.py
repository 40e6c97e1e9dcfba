"""Trained-looking random BN state, for checks and benchmarks without trained weights:
fresh BNs are the identity and would hide a fusion that ignores them."""
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def randomize_batch_norms_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm, in place, running_mean ~ N(0, 0.5), running_var ~ U(0.5, 2),
    gamma ~ U(0.5, 1.5), beta ~ N(0, 0.2), from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=generator, dtype=torch.float64) * std

    def uniform(shape, low, high):
        return torch.empty(shape, dtype=torch.float64).uniform_(low, high, generator=generator)

    for module in model.modules():
        if not isinstance(module, _BatchNorm):
            continue
        shape = module.running_mean.shape
        module.running_mean.copy_(normal(shape, 0.5))
        module.running_var.copy_(uniform(shape, 0.5, 2.0))
        if module.weight is not None:
            module.weight.copy_(uniform(shape, 0.5, 1.5))
            module.bias.copy_(normal(shape, 0.2))
    return model

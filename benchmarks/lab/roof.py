"""This machine's 3x3-convolution roof: the throughput the benchmark's FLOPs are set
against."""
import torch
from torch import nn

from mmrepvgg.analysis._timing import time_interleaved


def conv3x3_roof(batch_size: int = 8, channels: int = 256, size: int = 56,
                 warmup: int = 1, rounds: int = 5, device: str = 'cpu') -> dict:
    """This machine's 3x3-convolution throughput: multiply-adds per second of one large
    3x3 conv (stride 1, padding 1, with bias, channels-last, ``torch.inference_mode``).

    Returns:
        ``dict(gmacs_per_s, shape=(N, C, H, W), gmacs=multiply-adds of one call in G)``;
        the same unit as the FLOPs of :mod:`mmrepvgg.analysis.complexity`.
    """
    conv = nn.Conv2d(channels, channels, 3, padding=1).to(device).eval()
    conv.to(memory_format=torch.channels_last)
    images = torch.randn(batch_size, channels, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode():
        timing = time_interleaved({'conv': lambda: conv(images)}, batch_size, warmup,
                                  rounds, device)['conv']
    gmacs = batch_size * channels * channels * 9 * size * size / 1e9
    return dict(gmacs_per_s=gmacs / timing.median_s, gmacs=gmacs,
                shape=[batch_size, channels, size, size],
                spread=(timing.max_s - timing.min_s) / timing.median_s)

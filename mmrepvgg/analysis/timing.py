"""Wall-clock timing of model calls on a shared machine.

Candidates are timed round-robin (one call of each per round), so a burst of load from
other processes hits all of them alike and their ratios stay meaningful; the median over
rounds is reported with the min-max spread.
"""
import statistics
import time
from typing import Callable, Dict, List, NamedTuple

import torch
from torch import nn


class Timing(NamedTuple):
    """Latency of one call on a batch, over the timed rounds.

    Attributes:
        batch_size: images per call.
        median_s: median seconds per call.
        min_s / max_s: fastest and slowest call, seconds.
        rounds: number of timed calls.
    """
    batch_size: int
    median_s: float
    min_s: float
    max_s: float
    rounds: int

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.median_s

    @property
    def spread(self) -> float:
        """``(max - min) / median``: how much the machine's load moved the timings."""
        return (self.max_s - self.min_s) / self.median_s

    def as_dict(self) -> dict:
        return dict(batch_size=self.batch_size, images_per_s=self.images_per_s,
                    latency_ms_median=1e3 * self.median_s, latency_ms_min=1e3 * self.min_s,
                    latency_ms_max=1e3 * self.max_s, spread=self.spread, rounds=self.rounds)


def _synchronize(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def time_interleaved(candidates: Dict[str, Callable[[], object]], batch_size: int,
                     warmup: int = 1, rounds: int = 5,
                     device: str = 'cpu') -> Dict[str, Timing]:
    """Time every candidate (a call running one batch) ``rounds`` times, round-robin,
    after ``warmup`` untimed calls of each."""
    for run_batch in candidates.values():
        for _ in range(warmup):
            run_batch()
    _synchronize(device)
    seconds: Dict[str, List[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run_batch in candidates.items():
            start = time.perf_counter()
            run_batch()
            _synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: Timing(batch_size, statistics.median(values), min(values), max(values),
                         rounds)
            for name, values in seconds.items()}


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
                shape=[batch_size, channels, size, size], spread=timing.spread)

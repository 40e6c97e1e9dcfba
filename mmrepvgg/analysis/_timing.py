"""Wall-clock timing of model calls on a shared machine.

Candidates are timed round-robin (one call of each per round), so a burst of load from
other processes hits all of them alike and their ratios stay meaningful; the median over
rounds is reported with the min-max spread.
"""
import statistics
import time
from typing import Callable, Dict, List, NamedTuple

import torch


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

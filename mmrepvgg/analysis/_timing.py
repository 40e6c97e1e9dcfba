"""Wall-clock timing of model calls on a shared machine: candidates are timed round-robin
(one call of each per round), so a burst of load from other processes hits all alike."""
import statistics
import time
from typing import Callable, Dict, List, NamedTuple

import torch


class _Timing(NamedTuple):
    """Seconds per call on a batch of ``batch_size`` images, over ``rounds`` timed calls."""
    batch_size: int
    median_s: float
    min_s: float
    max_s: float
    rounds: int

    @property
    def images_per_s(self) -> float:
        return self.batch_size / self.median_s


def time_interleaved(candidates: Dict[str, Callable[[], object]], batch_size: int,
                     warmup: int = 1, rounds: int = 5,
                     device: str = 'cpu') -> Dict[str, _Timing]:
    """Time every candidate (a call running one batch) ``rounds`` times, round-robin,
    after ``warmup`` untimed calls of each."""
    synchronize = torch.cuda.synchronize if device.startswith('cuda') else lambda: None
    for run_batch in candidates.values():
        for _ in range(warmup):
            run_batch()
    synchronize()
    seconds: Dict[str, List[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run_batch in candidates.items():
            start = time.perf_counter()
            run_batch()
            synchronize()
            seconds[name].append(time.perf_counter() - start)
    return {name: _Timing(batch_size, statistics.median(values), min(values), max(values),
                          rounds)
            for name, values in seconds.items()}

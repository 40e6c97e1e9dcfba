"""Round-robin timing (mmrepvgg.analysis._timing, which tools/dense_demo.py times the train
and deploy forms with): each row's figures are those of the calls timed, whatever the
clock."""
import pytest

from mmrepvgg.analysis import _timing as timing
from mmrepvgg.analysis._timing import Timing


def test_timing_rows_are_computed_from_the_measured_seconds():
    row = Timing(batch_size=16, median_s=0.5, min_s=0.4, max_s=0.6, rounds=5).as_dict()
    assert row == dict(batch_size=16, images_per_s=32.0, latency_ms_median=500.0,
                       latency_ms_min=400.0, latency_ms_max=600.0,
                       spread=pytest.approx(0.4), rounds=5)


def test_candidates_are_timed_round_robin_with_median_min_and_max_of_their_calls(
        monkeypatch):
    """A clock that the calls themselves advance (A takes 1, 5, 2 s; B 3 s every time):
    the figures are those of the calls, whatever the formula."""
    now = [0.0]
    durations = {'A': iter([1.0, 5.0, 2.0]), 'B': iter([3.0] * 3)}
    calls = []

    def call(name):
        def run_batch():
            calls.append(name)
            if len(calls) > 2:  # the two warm-up calls take no time
                now[0] += next(durations[name])
        return run_batch

    monkeypatch.setattr(timing.time, 'perf_counter', lambda: now[0])
    timings = timing.time_interleaved({'A': call('A'), 'B': call('B')}, batch_size=6,
                                      warmup=1, rounds=3)
    assert calls == ['A', 'B'] + ['A', 'B'] * 3
    assert timings['A'] == timing.Timing(6, median_s=2.0, min_s=1.0, max_s=5.0, rounds=3)
    assert timings['A'].images_per_s == 3.0 and timings['A'].spread == 2.0
    assert timings['B'] == timing.Timing(6, median_s=3.0, min_s=3.0, max_s=3.0, rounds=3)

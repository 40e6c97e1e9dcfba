"""Round-robin timing (mmrepvgg.analysis._timing, which tools/dense_demo.py times the train
and deploy forms with): each row's figures are those of the calls timed, whatever the
clock."""
from mmrepvgg.analysis import _timing as timing


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
    assert timings['A'] == timing._Timing(6, median_s=2.0, min_s=1.0, max_s=5.0, rounds=3)
    assert timings['A'].images_per_s == 3.0
    assert timings['B'] == timing._Timing(6, median_s=3.0, min_s=3.0, max_s=3.0, rounds=3)

"""Each run of :class:`~mmrepvgg.engine.safe_runner.RepVGGRunner` logs to its own streams,
even when one process starts two runs within one second (a notebook, a test, a sweep):
mmengine names the logger and visualizer by the config and that second and hands back an
existing instance of the name."""
import contextlib
import io
import time

from torch import nn

from mmrepvgg.engine.safe_runner import RepVGGRunner


def test_two_runs_started_in_the_same_second_each_log_to_their_own_stream(
        tmp_path, monkeypatch):
    monkeypatch.setattr(time, 'time', lambda: 1_800_000_000.25)  # one second for both
    runners, streams = [], []
    for run in range(2):
        stream = io.StringIO()
        with contextlib.redirect_stdout(stream):
            runner = RepVGGRunner(model=nn.Conv2d(1, 1, 1), work_dir=str(tmp_path / str(run)),
                                  experiment_name='same_config')
            runner.logger.warning(f'line of run {run}')
        runners.append(runner)
        streams.append(stream.getvalue())
    assert runners[0].timestamp == runners[1].timestamp  # the clash mmengine would have
    assert runners[0].logger is not runners[1].logger
    assert runners[0].visualizer is not runners[1].visualizer
    assert 'line of run 0' in streams[0] and 'line of run 1' not in streams[0]
    assert 'line of run 1' in streams[1] and 'line of run 0' not in streams[1]

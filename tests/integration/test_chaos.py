"""The chaos run, short: 30 jobs (more if they would end first) while workers are SIGKILLed whole every few
seconds and Redis once."""

import argparse

import pytest

from tests.chaos import run


@pytest.mark.chaos
def test_chaos_loses_nothing_and_duplicates_nothing(capsys):
    # A kill every 3 to 9 s is far denser than production's; at the default cap of 3 deaths, a job killed under
    # three times in a row fails as a poison job, by design (seen once in a run of this test). The cap is raised
    # so that every job must come through.
    # 12 steps a job (the embedded model's default): enough work in flight that a kill, which waits up to a lease
    # renewal (4 s) to read what its victim holds, does not find the queue drained on a fast machine
    # Five worker kills, then none: on a slow day a new worker takes 10 to 13 s to start here, and an uncapped
    # kill every 3 to 9 s struck the fleet faster than it recovered (no job ended for 70 s; half the jobs were
    # unfinished at the timeout)
    summary = run(argparse.Namespace(jobs=30, workers=2, kill_every=6.0, kills=5, steps=12, timeout=240, seed=1,
                                     max_deliveries=10))
    # 30 posted before any fault, and more while the faults have not all happened (a fast machine would finish
    # first); one posted just after the Redis restart may get a 503, which promises nothing
    assert summary["accepted"] >= 30 and summary["succeeded"] == summary["accepted"], summary
    assert summary["lost"] == 0 and summary["duplicated_effects"] == 0, summary
    assert summary["extra_objects"] == 0 and summary["missing_objects"] == 0, summary
    assert summary["worker_kills"] >= 2 and summary["redis_kills"] == 1, summary
    assert summary["restores"] >= 1 and summary["recoveries"] >= 1, summary  # kills that caught messages held
    # The failover: a dead worker's messages go back to the queue about a lease (20 s) after its last renewal,
    # just before the kill, plus up to a restore sweep (2 s); not after kombu's stock visibility timeout (an
    # hour), nor after a dead sweeper's lock (five minutes, before shared/leases.py shortened it). The max allows
    # a lease that runs out while no worker consumes (both just started: 13 s to import torch on a slow day).
    # The jobs' next runs come later, behind the backlog (`recovery_p50_s`, printed; 26 s, and a p99 of 90 s on
    # that day): that wait moves with the machine's speed, so it is not bounded here.
    assert summary["restore_p50_s"] <= 25 and summary["restore_max_s"] <= 40, summary

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
    summary = run(argparse.Namespace(jobs=30, workers=2, kill_every=6.0, steps=12, timeout=300, seed=1,
                                     max_deliveries=10))
    # 30 posted before any fault, and more while the faults have not all happened (a fast machine would finish
    # first); one posted just after the Redis restart may get a 503, which promises nothing
    assert summary["accepted"] >= 30 and summary["succeeded"] == summary["accepted"], summary
    assert summary["lost"] == 0 and summary["duplicated_effects"] == 0, summary
    assert summary["extra_objects"] == 0 and summary["missing_objects"] == 0, summary
    assert summary["worker_kills"] >= 2 and summary["redis_kills"] == 1, summary
    assert summary["recoveries"] >= 1, summary  # kills that caught jobs held: they ran again within the lease
    # from the kill each job recovered from (a job a later kill caught again is measured from that one): about a
    # lease (20 s) and a sweep, plus a second lease where the Redis restart came in between
    assert summary["recovery_p50_s"] <= 30 and summary["recovery_p99_s"] <= 60, summary

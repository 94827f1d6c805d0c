"""`GENFLEET_WRITE_IN=process`: jobs written by a writer process of the sampling process's own (real embedded
pipeline, real Redis, local storage, a real child process), and the faults that process can meet: SIGKILLed
with writes in hand, and its pool process SIGKILLed under it."""

import os
import signal
import subprocess
import sys
import time

import pytest

from genfleet.shared.schema import JobStatus
from genfleet.workers import recording, writer
from genfleet.workers.runner import run_batch, start_batch
from genfleet.workers.write_process import ProcessWrites, WriterLost
from tests.helpers import alive, wait_for
from tests.unit.test_batching import embedded, make_ctx, pixels, queued  # noqa: F401  (embedded: a fixture)


@pytest.fixture
def ctxs(redis, redis_url, tmp_path, embedded):  # noqa: F811
    """Two contexts on the same Redis and folder: one writing on threads, one through a writer process."""
    common = {"redis_url": redis_url, "storage_url": tmp_path.as_uri()}
    threads = make_ctx(redis, tmp_path, embedded, **common)
    proc = make_ctx(redis, tmp_path, embedded, **common)
    proc.writer = ProcessWrites(proc.settings, 2, 4)
    proc.writer.start()
    yield threads, proc
    proc.writer.shutdown()


def in_this_process(*_args, **_kwargs):
    raise AssertionError("a write ran in the sampling process")


def test_jobs_written_by_the_writer_process_are_those_threads_write(ctxs, monkeypatch):
    threads, proc = ctxs
    seeds = [3, 4, 5]
    by_threads = run_batch([queued(threads.store, seed=s, num_images=2) for s in seeds], threads)
    monkeypatch.setattr(writer, "write_job", in_this_process)
    monkeypatch.setattr(recording, "write_job", in_this_process)
    by_process = run_batch([queued(proc.store, seed=s, num_images=2) for s in seeds], proc)
    assert [j.status for j in by_process] == [JobStatus.succeeded] * 3, [j.error for j in by_process]
    for a, b in zip(by_threads, by_process, strict=True):
        assert proc.store.get(b.id).status is JobStatus.succeeded  # recorded by the writer process
        assert [o.seed for o in a.outputs] == [o.seed for o in b.outputs]
        assert [o.score for o in a.outputs] == [o.score for o in b.outputs]
        assert proc.storage.exists(f"{b.id}/manifest.json")
        for i in range(2):
            assert (pixels(proc, a, i) == pixels(proc, b, i)).all()
    assert proc.writer.started == 1 and proc.writer.backlog.pending == 0


def test_writes_held_by_a_writer_process_killed_fail_and_the_next_write_starts_another(ctxs):
    _, proc = ctxs
    child = proc.writer._child
    os.kill(child.proc.pid, signal.SIGSTOP)  # holds the writes it is handed
    jobs = [queued(proc.store, seed=s) for s in (1, 2)]
    held = start_batch(jobs, proc).outcomes
    time.sleep(0.5)
    assert not any(f.done() for f in held)
    os.kill(child.proc.pid, signal.SIGKILL)
    for f in held:
        with pytest.raises(WriterLost):
            f.result(timeout=10)
    assert all(proc.store.get(j.id).status is JobStatus.running for j in jobs)  # nothing recorded: they run again
    assert proc.writer.backlog.pending == 0
    again = run_batch([queued(proc.store, seed=9)], proc)
    assert again[0].status is JobStatus.succeeded and proc.writer.started == 2


def test_the_writer_process_dies_with_its_pool_process(redis_url, tmp_path):
    script = ("import sys, time\n"
              "from genfleet.shared.settings import Settings\n"
              "from genfleet.workers.write_process import ProcessWrites\n"
              f"w = ProcessWrites(Settings(redis_url={redis_url!r}, storage_url={tmp_path.as_uri()!r}), 1, 1)\n"
              "w.start(); print(w._child.proc.pid, flush=True); time.sleep(60)\n")
    pool = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(pool.stdout.readline())
    assert alive(child)
    pool.kill()
    pool.wait()

    wait_for(lambda: not alive(child), 10, "the writer process outlived its pool process")

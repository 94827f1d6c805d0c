"""Batched sampling through the runner's plain functions: real embedded pipeline, real Redis, local storage.

The pipeline is wrapped to record each call and, where a test says so, to fail: a GPU's out-of-memory error
cannot happen on this CPU machine, so a wrapper raises torch.cuda.OutOfMemoryError above a batch size.
"""

import threading
import time

import numpy as np
import pytest
import torch

from genfleet.shared.batches import BatchStore
from genfleet.shared.jobstore import JobStore
from genfleet.shared.outcomes import Outcomes
from genfleet.shared.schema import Job, JobRequest, JobStatus
from genfleet.shared.settings import Settings
from genfleet.shared.storage import LocalStorage
from genfleet.workers.marking import Marker
from genfleet.workers.models import PipelineCache, load_pipeline
from genfleet.workers.runner import Context, run_batch
from genfleet.workers.safety import SafetyChecker
from genfleet.workers.sampling import Sampler, group_key
from genfleet.workers.scoring import ScorerSet
from genfleet.workers.writer import BoundedWriter, ThreadWrites

DEVICE = torch.device("cpu")
FAST = {"steps": 4}  # few steps: these tests are about batching, not pictures


@pytest.fixture(scope="module")
def embedded():
    return load_pipeline("embedded", DEVICE)


class Recorder:
    """Wraps a pipeline: records every call's batch and options; can fail on a prompt or above a size."""

    def __init__(self, pipe, fail_on: str | None = None, oom_above: int | None = None):
        self.pipe, self.fail_on, self.oom_above = pipe, fail_on, oom_above
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        n = len(kwargs["prompt"])
        self.calls.append({"n": n, **{k: v for k, v in kwargs.items() if k not in ("generator",)}})
        if self.oom_above is not None and n > self.oom_above:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated at batch {n})")
        if self.fail_on is not None and self.fail_on in kwargs["prompt"]:
            raise RuntimeError("sampling exploded")
        return self.pipe(**kwargs)


def make_ctx(redis, tmp_path, pipe, max_batch=8, **settings) -> Context:
    """A worker's context around `pipe`; quality retries off unless asked for (these tests count calls)."""
    pipelines = PipelineCache(DEVICE)
    pipelines.add("embedded", pipe)
    settings = Settings(**{"redis_url": "redis://unused", "quality_attempts": 1, "provenance": "dev",
                           "data_dir": tmp_path / "data", **settings})
    store, storage = JobStore(redis, 600), LocalStorage(tmp_path)
    notified: list[tuple[str | None, dict]] = []  # webhooks the worker would queue, kept for the tests to read
    ctx = Context(settings=settings, store=store, storage=storage, pipelines=pipelines,
                  scorers=ScorerSet(settings.scorer_names), sampler=Sampler(DEVICE, max_batch),
                  writer=ThreadWrites(2, 4),
                  outcomes=Outcomes(BatchStore(store), storage, lambda url, event: notified.append((url, event))),
                  safety=SafetyChecker(settings.safety_checker, DEVICE), marker=Marker(settings))
    ctx.notified = notified  # type: ignore[attr-defined]  # kept on the context for the tests to read
    return ctx


def queued(store: JobStore, **fields) -> Job:
    job = Job.new(JobRequest(**{"prompt": "a red cat with a blue hat", **FAST, **fields}), "embedded")
    store.create(job)
    return job


def pixels(ctx: Context, job: Job, i: int = 0) -> np.ndarray:
    from io import BytesIO

    from PIL import Image
    return np.asarray(Image.open(BytesIO(ctx.storage.get(f"{job.id}/{i}.png"))), dtype=np.int16)


def test_compatible_jobs_share_one_call_and_incompatible_never_do(redis, tmp_path, embedded):
    rec = Recorder(embedded)
    ctx = make_ctx(redis, tmp_path, rec)
    jobs = [queued(ctx.store, seed=1), queued(ctx.store, seed=2, num_images=2), queued(ctx.store, seed=3, width=40),
            queued(ctx.store, seed=4, steps=5), queued(ctx.store, seed=5, prompt="a green hat", negative_prompt="cat")]
    done = run_batch(jobs, ctx)
    assert [j.status for j in done] == [JobStatus.succeeded] * 5
    assert sorted(c["n"] for c in rec.calls) == [1, 1, 4]  # jobs 1, 2 and 5 together; 40 wide and 5 steps alone
    width, steps = jobs[0].request.width, jobs[0].request.steps
    calls = sorted(((c["n"], c.get("width"), c.get("num_inference_steps")) for c in rec.calls), key=str)
    assert calls == sorted([(4, width, steps), (1, 40, steps), (1, width, 5)], key=str)
    shared = next(c for c in rec.calls if c["n"] == 4)
    assert shared["negative_prompt"] == ["", "", "", "cat"]
    assert {group_key(j) for j in jobs[:2]} == {group_key(jobs[4])}


def test_outputs_and_seeds_land_on_the_right_job(redis, tmp_path, embedded):
    ctx = make_ctx(redis, tmp_path, embedded)
    prompts = ["a red cat with a blue hat", "a yellow hat", "a green cat", "a white cat with a pink hat"]
    batched = run_batch([queued(ctx.store, prompt=p, seed=10 * i) for i, p in enumerate(prompts)], ctx)
    alone = [run_batch([queued(ctx.store, prompt=p, seed=10 * i)], ctx)[0] for i, p in enumerate(prompts)]
    for b, a in zip(batched, alone, strict=True):
        assert b.outputs[0].seed == a.outputs[0].seed == b.seed
        # the same job run alone gives the same picture (up to float noise from a different batch size)
        assert np.abs(pixels(ctx, b) - pixels(ctx, a)).max() <= 3
    assert np.abs(pixels(ctx, batched[0]) - pixels(ctx, batched[1])).mean() > 10


def test_a_job_whose_sampling_raises_fails_alone(redis, tmp_path, embedded):
    ctx = make_ctx(redis, tmp_path, Recorder(embedded, fail_on="a poisoned prompt"))
    jobs = [queued(ctx.store, seed=1), queued(ctx.store, prompt="a poisoned prompt"), queued(ctx.store, seed=2)]
    done = {j.id: j for j in run_batch(jobs, ctx)}
    assert done[jobs[1].id].status is JobStatus.failed and "sampling exploded" in done[jobs[1].id].error
    assert done[jobs[0].id].status is done[jobs[2].id].status is JobStatus.succeeded
    assert ctx.store.get(jobs[1].id).status is JobStatus.failed
    assert not ctx.storage.exists(f"{jobs[1].id}/manifest.json")


def test_out_of_memory_splits_the_batch_and_remembers_what_fit(redis, tmp_path, embedded):
    rec = Recorder(embedded, oom_above=2)
    ctx = make_ctx(redis, tmp_path, rec)
    jobs = [queued(ctx.store, seed=i) for i in range(6)]
    done = run_batch(jobs, ctx)
    assert all(j.status is JobStatus.succeeded for j in done)
    assert ctx.sampler.fits == {("embedded", None, None): 2} and ctx.sampler.too_big == {("embedded", None, None): 3}
    rec.calls.clear()
    run_batch([queued(ctx.store, seed=100 + i) for i in range(5)], ctx)
    assert [c["n"] for c in rec.calls] == [2, 2, 1]  # chunked up front: no more failed attempts


def test_a_single_image_that_does_not_fit_fails_with_the_reason(redis, tmp_path, embedded):
    ctx = make_ctx(redis, tmp_path, Recorder(embedded, oom_above=0))
    done = run_batch([queued(ctx.store)], ctx)
    assert done[0].status is JobStatus.failed and "OutOfMemoryError" in done[0].error


def test_bounded_writer_blocks_intake_when_writes_fall_behind():
    writer = BoundedWriter(threads=1, capacity=2)
    gate = threading.Event()
    futures = [writer.submit(gate.wait) for _ in range(2)]
    third_submitted = threading.Event()

    def submit_third():
        futures.append(writer.submit(lambda: None))
        third_submitted.set()

    threading.Thread(target=submit_third, daemon=True).start()
    time.sleep(0.3)
    assert not third_submitted.is_set() and writer.backlog.pending == 2  # the producer waits instead of queueing more
    gate.set()
    assert third_submitted.wait(5)
    for f in futures:
        f.result(timeout=5)
    assert writer.backlog.high_water == 2 and writer.backlog.pending == 0


def test_a_write_refused_after_shutdown_frees_its_slot():
    writer = BoundedWriter(threads=1, capacity=1)
    writer.shutdown()
    with pytest.raises(RuntimeError):
        writer.submit(lambda: None)
    take = threading.Thread(target=writer.backlog.take, daemon=True)  # with its slot still held, this blocks
    take.start()
    take.join(5)
    assert writer.backlog.pending == 1 and not take.is_alive()


def test_a_message_whose_record_is_gone_still_runs_and_is_recorded(redis, tmp_path, embedded):
    ctx = make_ctx(redis, tmp_path, embedded)
    job = queued(ctx.store)
    ctx.store.delete(job.id)  # as if Redis had lost it
    done = run_batch([job], ctx)
    assert done[0].status is JobStatus.succeeded and ctx.store.get(job.id).status is JobStatus.succeeded


def test_a_job_a_live_worker_holds_is_left_and_a_dead_workers_job_runs_again(redis, tmp_path, embedded):
    from genfleet.shared import leases

    ctx = make_ctx(redis, tmp_path, embedded)
    held, orphan = queued(ctx.store, seed=1), queued(ctx.store, seed=2)
    for job, owner in ((held, "gpu-7:41"), (orphan, "gpu-8:42")):
        ctx.store.update(job.model_copy(update={"status": JobStatus.running, "attempts": 1, "worker": owner}))
    redis.sadd(leases.keys.worker("gpu-7:41"), str(held.id))  # gpu-7 is alive and holds it; gpu-8 is gone
    done = run_batch([held, orphan], ctx)
    assert done[0] is None  # left unacked for its owner: not run, not recorded
    stored = ctx.store.get(held.id)
    assert stored.status is JobStatus.running and stored.attempts == 1 and stored.worker == "gpu-7:41"
    assert not ctx.storage.exists(f"{held.id}/manifest.json")
    assert done[1].status is JobStatus.succeeded and done[1].attempts == 2 and done[1].worker == leases.WORKER_ID


def test_a_rerun_whose_storage_stays_down_fails_once_with_a_dead_letter(redis, tmp_path, embedded, s3_server):
    """A job that ran before is checked for a finished manifest before it runs again; storage down past the
    outage window fails it there (it used to send its whole batch back to the queue, forever)."""
    from genfleet.shared import keys
    from genfleet.shared.storage import RideOut, S3Storage
    from tests.faults import FlakyEndpoint
    from tests.helpers import BUCKET

    ctx = make_ctx(redis, tmp_path, embedded)
    endpoint = FlakyEndpoint(s3_server._port)
    ctx.storage = RideOut(S3Storage(BUCKET, "unit-rerun", endpoint.url), outage_s=2, max_wait_s=0.5)
    job = queued(ctx.store)
    ctx.store.update(job.model_copy(update={"status": JobStatus.running, "attempts": 1, "worker": "gone:1"}))
    endpoint.kill()
    done = run_batch([job], ctx)
    assert done[0].status is JobStatus.failed and "storage unavailable" in done[0].error
    assert done[0].attempts == 1  # failed where it stood: not run, not counted again
    assert str(job.id) in redis.lindex(keys.DEAD_LETTER, 0).decode()


def test_bucketed_batches_pad_to_a_power_of_two_and_drop_the_padding(redis, tmp_path, embedded):
    from genfleet.shared.fastpath import FastPath

    rec = Recorder(embedded)
    ctx = make_ctx(redis, tmp_path, rec)
    ctx.sampler.fastpath = {"*": FastPath(bucket_batches=True)}
    done = run_batch([queued(ctx.store, seed=1, num_images=3)], ctx)
    assert done[0].status is JobStatus.succeeded and len(done[0].outputs) == 3
    assert [c["n"] for c in rec.calls] == [4]  # 3 images ran as a call of 4; the padding's image was dropped
    plain_ctx = make_ctx(redis, tmp_path / "plain", embedded)
    plain = run_batch([queued(plain_ctx.store, seed=1, num_images=3)], plain_ctx)
    assert np.abs(pixels(ctx, done[0], 2) - pixels(plain_ctx, plain[0], 2)).max() <= 3  # the same pictures

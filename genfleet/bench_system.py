"""The system side of `genfleet bench`: a Redis, one worker process and, `--through api`, an API process and
S3-compatible storage, kept up across rounds; each round times N single-image jobs from the first publish to
the last recorded outcome, seen in the batch's counts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil

from genfleet import supervisor
from genfleet.shared import keys
from genfleet.shared.batches import Batch, BatchItem, BatchRequest, BatchStore, new_jobs
from genfleet.shared.fairshare import Fairness
from genfleet.shared.jobstore import JobStore
from genfleet.shared.queue import publish, publisher
from genfleet.shared.redis_server import client
from genfleet.shared.schema import JobRequest
from genfleet.shared.settings import Settings
from genfleet.workers.threads import WRITE, kernel_name

WRITER_MODULE = "genfleet.workers.write_process"  # a writer process's command line names it
TERMINAL = ("succeeded", "failed", "cancelled")  # the batch-counts hash's fields that end a job (shared/batches.py)
POLL_S = 0.05  # how often a round looks for its end: at most this much added to a round of several seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def worker_cpu(worker: psutil.Process, children: list[psutil.Process]) -> dict[str, float]:
    """A worker's CPU seconds so far by what spends them, from the kernel's per-thread accounting: its main
    process (Celery's consumer: messages, acks, heartbeats, the batches' hand-over), the writes (the threads
    named `genfleet-write`, and a writer process whole) and the sampling (every other thread of a pool process:
    the pipeline's call and its OpenMP threads, the batch's bookkeeping). A thread that has ended takes its
    count with it; the writing threads live as long as their pool. `children`: the worker's processes below its
    main one."""
    parts = {"worker_main": _cpu_seconds(worker), "worker_sampling": 0.0, "worker_writes": 0.0}
    for proc in children:
        try:
            if WRITER_MODULE in " ".join(proc.cmdline()):
                parts["worker_writes"] += _cpu_seconds(proc)
                continue
            for thread in proc.threads():
                part = "worker_writes" if kernel_name(proc.pid, thread.id) == WRITE else "worker_sampling"
                parts[part] += thread.user_time + thread.system_time
        except psutil.NoSuchProcess:
            continue
    return parts


class System:
    """Redis and one worker batching at `batch`; subclasses say how jobs go in and how their end is seen."""

    api: subprocess.Popen | None = None
    s3: subprocess.Popen | None = None  # moto's server, when started here
    last_batch: str | None = None  # the id of the batch the last round sent

    def __init__(self, model: str, request: dict, batch: int, settings: Settings, workdir: Path,
                 storage_url: str | None, s3_endpoint: str | None) -> None:
        self.model, self.request, self.batch, self.workdir = model, request, batch, workdir
        self.queue = f"genfleet-bench-{uuid.uuid4().hex[:6]}"
        self.settings = settings.model_copy(update={"queue": self.queue, "model": model, "data_dir": workdir / "redis"})
        self.storage_url, self.s3_endpoint = storage_url, s3_endpoint
        self._exit = ExitStack()
        self.env: dict[str, str] = {}

    def __enter__(self) -> System:
        url = self._exit.enter_context(supervisor.redis_for(self.settings))
        self.store = JobStore(client(url), 3600, fairness=Fairness.of(self.settings))
        storage = self._storage_env()
        # Scoring stays on (it is part of the system); quality retries are off: they are extra images that the
        # raw pipeline never makes, so they would not compare like with like.
        self.env = {**supervisor.worker_env(url, 0), "GENFLEET_MODEL": self.model, "GENFLEET_QUEUE": self.queue,
                    "GENFLEET_MAX_BATCH": str(self.batch), "GENFLEET_QUALITY_ATTEMPTS": "1",
                    "GENFLEET_DATA_DIR": str(self.settings.data_dir),
                    # signed as in production; with no signer named, a development one (the bench's own Redis
                    # makes it the embedded default, but a GENFLEET_REDIS_URL given to the bench would not)
                    "GENFLEET_PROVENANCE": os.environ.get("GENFLEET_PROVENANCE", "dev"), **storage}
        self.log = self.workdir / "worker.log"
        self.worker = supervisor.spawn(supervisor.worker_command(self.settings, "WARNING"), self.env, self.log)
        self._exit.callback(supervisor.stop, self.worker)
        self.start()
        self.images_per_s(self.batch)  # warm: the worker loads its model and runs one full batch
        return self

    def __exit__(self, *exc) -> None:
        self._exit.close()

    def _storage_env(self) -> dict[str, str]:
        return {"GENFLEET_STORAGE_URL": self.storage_url or (self.workdir / "out").as_uri()}

    def start(self) -> None:
        """Whatever else the jobs go through."""

    def images_per_s(self, jobs: int) -> float:
        raise NotImplementedError

    def cpu_by_part(self) -> dict[str, float]:
        """CPU seconds the kernel has charged so far to each part: the worker by what does it (`worker_cpu`), the
        API, Redis and moto's S3 server when started here, and this process (the watching)."""
        me = psutil.Process()
        worker = psutil.Process(self.worker.pid)
        children = worker.children(recursive=True)
        worker_pids = {worker.pid} | {p.pid for p in children}
        parts = {**worker_cpu(worker, children), "api": 0.0, "redis": 0.0, "s3": 0.0, "other": 0.0,
                 "bench": _cpu_seconds(me)}
        for proc in me.children(recursive=True):
            if proc.pid in worker_pids:
                continue
            if self.api is not None and proc.pid == self.api.pid:
                part = "api"
            elif self.s3 is not None and proc.pid == self.s3.pid:
                part = "s3"
            else:
                part = "redis" if "redis" in proc.name() else "other"
            parts[part] += _cpu_seconds(proc)
        return parts

    def _check_worker(self) -> None:
        if self.worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {self.worker.returncode}:\n{supervisor.tail(self.log)}")

    def _why(self, seen: Batch) -> str:
        """What a round that did not succeed whole says: its counts, a failed job's error, the worker's log."""
        errors = (job.error for job in map(self.store.get, seen.job_ids()) if job is not None and job.error)
        return (f"bench batch ended with {seen.counts}; a failed job's error: {next(errors, None)}\n"
                f"the worker's log:\n{supervisor.tail(self.log, 60)}")

    def previews_published(self) -> int:
        """The preview events the last round's jobs hold (read after the round, outside its timing; each job's
        preview stream keeps its latest few): evidence that the rounds with previews on made them."""
        seen = BatchStore(self.store).get(self.last_batch) if self.last_batch else None
        if seen is None:
            return 0
        return sum(int(self.store.redis.xlen(keys.previews(job_id))) for job_id in seen.job_ids())

    def _jobs(self, n: int) -> list[JobRequest]:
        return [JobRequest(**{**self.request, "seed": i}) for i in range(n)]

    def _wait_finished(self, batch_id: str, total: int) -> Batch:
        """Polls the batch's finished counts (one HMGET of three small numbers, nothing parsed) until they reach
        its `total` jobs, then reads the batch once: cheap enough that the watching takes next to nothing from the
        cores the worker shares, and fine enough (`POLL_S`) to add little to a round."""
        counts = keys.batch_counts(batch_id)
        while sum(int(n or 0) for n in self.store.redis.hmget(counts, TERMINAL)) < total:
            self._check_worker()
            time.sleep(POLL_S)
        seen = BatchStore(self.store).get(batch_id)
        if seen is None or seen.status != "finished":
            raise RuntimeError(f"bench batch {batch_id}: its counts say finished, its record {seen}")
        return seen


class InProcess(System):
    """Jobs recorded and published from this process as one batch (what the API does, without HTTP)."""

    def images_per_s(self, jobs: int) -> float:
        app = publisher(self.settings, self.env["GENFLEET_REDIS_URL"])
        batch = Batch(model=self.model, total=jobs)
        body = BatchRequest(prompts=[BatchItem(prompt=r.prompt, seed=r.seed) for r in self._jobs(jobs)],
                            params={k: v for k, v in self.request.items() if k != "prompt"})
        stream = new_jobs(batch, body, self.model)
        self.last_batch = str(batch.id)
        start = time.perf_counter()
        BatchStore(self.store).create(batch, stream)
        publish(stream, self.store, app, self.settings)
        seen = self._wait_finished(str(batch.id), jobs)
        elapsed = time.perf_counter() - start
        if seen.counts is None or seen.counts.succeeded != jobs:
            raise RuntimeError(self._why(seen))
        return jobs / elapsed


class ThroughAPI(System):
    """Jobs sent as one `POST /v1/batches`, their end seen in Redis and confirmed by `GET /v1/batches/{id}`;
    images to S3."""

    def _storage_env(self) -> dict[str, str]:
        if self.storage_url and self.storage_url.startswith("s3://"):
            return {"GENFLEET_STORAGE_URL": self.storage_url,
                    **({"GENFLEET_S3_ENDPOINT_URL": self.s3_endpoint} if self.s3_endpoint else {})}
        try:
            import boto3
            import moto.server  # noqa: F401  (only to fail here, with the hint, when it is missing)
        except ImportError:
            raise SystemExit("--through api needs --storage-url s3://... (or moto, from the test extra)") from None
        for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                     "AWS_DEFAULT_REGION": "us-east-1"}.items():
            os.environ.setdefault(k, v)
        # a process of its own, so the kernel charges its CPU to it, apart from the watching
        port = _free_port()
        self.s3 = supervisor.spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   dict(os.environ), self.workdir / "s3.log")
        self._exit.callback(supervisor.stop, self.s3, 5.0)
        endpoint = f"http://127.0.0.1:{port}"
        _wait_up(lambda: httpx.get(endpoint, timeout=1), self.s3, self.workdir / "s3.log", "moto's S3 server")
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="genfleet-bench")
        return {"GENFLEET_STORAGE_URL": f"s3://genfleet-bench/{self.queue}", "GENFLEET_S3_ENDPOINT_URL": endpoint}

    def start(self) -> None:
        port, log = _free_port(), self.workdir / "api.log"
        env = {**self.env, "GENFLEET_MAX_QUEUE_DEPTH": "10000000", "GENFLEET_LOG_FORMAT": "text"}
        env.pop("GENFLEET_API_KEYS", None)
        api = self.api = supervisor.spawn(supervisor.api_command("127.0.0.1", port), env, log)
        self._exit.callback(supervisor.stop, api)
        self.http = self._exit.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60))
        _wait_up(lambda: self.http.get("/healthz").raise_for_status(), api, log, "the API")

    def images_per_s(self, jobs: int) -> float:
        params = {k: v for k, v in self.request.items() if k != "prompt"}
        prompts = [{"prompt": r.prompt, "seed": r.seed} for r in self._jobs(jobs)]
        start = time.perf_counter()
        batch = self.http.post("/v1/batches", json={"prompts": prompts, "params": params}).raise_for_status().json()
        self.last_batch = batch["id"]
        seen = self._wait_finished(batch["id"], jobs)
        elapsed = time.perf_counter() - start
        # what a client sees: the API must report the batch finished, every job succeeded
        batch = self.http.get(f"/v1/batches/{batch['id']}").raise_for_status().json()
        if batch["status"] != "finished" or batch["counts"]["succeeded"] != jobs:
            raise RuntimeError(f"the API reports the batch {batch['status']}: " + self._why(seen))
        return jobs / elapsed


def _wait_up(probe: Callable[[], object], proc: subprocess.Popen, log: Path, what: str, timeout_s: float = 60) -> None:
    """Calls `probe` until it stops raising an HTTP error, or fails with the process's log."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            probe()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} never came up:\n{supervisor.tail(log)}") from None
            time.sleep(0.1)

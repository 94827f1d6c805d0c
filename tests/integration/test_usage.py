"""Usage per tenant with real processes: what `/v1/usage`, `/metrics` and `/v1/fleet` say against the sum over the
tenant's own job records, and that no tenant reads another's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from genfleet.shared.schema import TERMINAL
from tests.helpers import wait_job
from tests.integration.test_fair_share import KEYS, auth, records


def metric(api: str, name: str, tenant: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{api}/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("tenant") == tenant:
                return sample.value
    raise AssertionError(f"no {name} for {tenant}")


def test_usage_is_the_sum_of_the_tenants_own_records(stack, redis):
    api = stack.start_api(GENFLEET_API_KEYS=KEYS)
    stack.start_worker()
    posted = {"a": [], "b": []}
    for tenant, n, images in (("a", 3, 2), ("b", 1, 1)):
        for i in range(n):
            r = httpx.post(f"{api}/v1/jobs", headers=auth(tenant), timeout=30,
                           json={"prompt": f"a green triangle {i}", "steps": 2, "num_images": images})
            assert r.status_code == 202, r.text
            posted[tenant].append(r.json()["id"])
    fleet = httpx.get(f"{api}/v1/fleet", headers=auth("a")).json()
    assert fleet["tenant"]["tenant"] == "a" and 0 <= fleet["tenant"]["waiting"] <= 3
    for tenant, ids in posted.items():
        for job_id in ids:
            job = wait_job(api, job_id, lambda j: j["status"] in TERMINAL, 180, "finished", headers=auth(tenant))
            assert job["status"] == "succeeded", job

    mine = [j for j in records(redis) if j.tenant == "a"]
    report = httpx.get(f"{api}/v1/usage", headers=auth("a")).json()
    assert report["tenant"] == "a"
    total = report["total"]
    assert total["jobs"] == 3 and total["images"] == sum(len(j.outputs) for j in mine) == 6
    assert total["accelerator_s"] == pytest.approx(sum(j.usage.accelerator_s for j in mine))
    assert total["queue_s"] == pytest.approx(sum(j.usage.queue_s for j in mine))
    assert all(j.usage.accelerator_s > 0 for j in mine)
    theirs = httpx.get(f"{api}/v1/usage", headers=auth("b")).json()["total"]
    assert theirs["jobs"] == 1 and theirs["images"] == 1  # b's own, none of a's

    assert metric(api, "genfleet_tenant_images_total", "a") == 6
    assert metric(api, "genfleet_tenant_accelerator_seconds_total", "a") == pytest.approx(total["accelerator_s"])
    day = httpx.get(f"{api}/v1/fleet", headers=auth("a")).json()["tenant"]
    assert day["waiting"] == 0 and day["last_day"]["images"] == 6

    # a range without these hours reads none of it; a bad range is refused naming its field
    old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    assert httpx.get(f"{api}/v1/usage", headers=auth("a"), params={"to": old}).json()["total"]["jobs"] == 0
    bad = httpx.get(f"{api}/v1/usage", headers=auth("a"), params={"from": old, "to": old})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "to"]
    wide = httpx.get(f"{api}/v1/usage", headers=auth("a"), params={"from": "2026-01-01T00:00:00Z"})
    assert wide.status_code == 422 and wide.json()["detail"][0]["loc"] == ["query", "from"]
    assert httpx.get(f"{api}/v1/usage").status_code == 401

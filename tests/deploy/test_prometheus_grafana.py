"""Prometheus config and alert rules through promtool (Debian's prometheus package); the Grafana dashboard's
queries name only metrics genfleet exports."""

import json
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, metric_names

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=60)


@needs_promtool
def test_config_and_rules_pass_promtool():
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "rules.yml"),
                 ("test", "rules", "rules.test.yml")):
        r = promtool(*args)
        assert r.returncode == 0, f"promtool {' '.join(args)}:\n{r.stdout}{r.stderr}"


def test_alerts_cover_what_operators_page_on():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"][0]["rules"]
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert {"GenfleetQueueGrowing", "GenfleetNoWorkers", "GenfleetJobFailureRate", "GenfleetAPIErrorRate",
            "GenfleetDeadLetters", "GenfleetJobLatencyP95High"} <= alerts


def test_rules_name_only_exported_metrics(exported):
    used = metric_names((DEPLOY / "prometheus" / "rules.yml").read_text())
    assert used and used <= exported, used - exported


def test_dashboard_queries_name_only_exported_metrics(exported):
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "genfleet.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used <= exported, used - exported
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("images generated", "latency", "queue depth", "oldest", "pipeline call", "quality", "retries",
                  "gpu memory"):
        assert topic in titles, topic
    # every panel queries something, and nothing is left pointing at a datasource that is not provisioned
    assert all(p["targets"] for p in dash["panels"])
    provisioned = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert provisioned["datasources"][0]["uid"] == dash["templating"]["list"][0]["current"]["value"]

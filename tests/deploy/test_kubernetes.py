"""The Kustomize manifests, rendered with `kubectl kustomize` and validated offline against the Kubernetes
schemas that the kubernetes-validate package ships. KEDA's and the Prometheus Operator's resources are custom
(no schema ships for them): their fields are checked here, and the PrometheusRule's rules go through promtool."""

import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from genfleet.shared.queue import PRIORITY_STEPS, model_queues
from genfleet.shared.settings import PLACEHOLDER, Settings
from tests.deploy.conftest import DEPLOY
from tests.helpers import settings_of

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with its built-in kustomize) is not installed")
K8S_VERSION = "1.32.0"
CUSTOM = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}


def render(path: str) -> list[dict]:
    r = subprocess.run([KUBECTL, "kustomize", str(DEPLOY / "k8s" / path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def by_kind(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("path", ["base", "overlays/scale-to-zero", "overlays/cpu-demo"])
def test_manifests_validate_against_the_kubernetes_schemas(path):
    docs = render(path)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
                                         "ScaledObject", "ServiceMonitor", "PrometheusRule"}
    for doc in docs:
        if doc["kind"] not in CUSTOM:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any schema error


def test_worker_asks_for_a_gpu_and_outlasts_its_batch():
    docs = render("base")
    worker = by_kind(docs, "Deployment", "genfleet-worker")["spec"]["template"]["spec"]
    container = worker["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    hard = int(by_kind(docs, "ConfigMap", "genfleet-config")["data"]["GENFLEET_HARD_TIME_LIMIT_S"])
    assert worker["terminationGracePeriodSeconds"] > hard  # Celery's warm shutdown finishes the batch
    assert container["livenessProbe"] and container["startupProbe"]
    assert {e.get("configMapRef", e.get("secretRef"))["name"] for e in container["envFrom"]} == {
        "genfleet-config", "genfleet-secrets"}
    api = by_kind(docs, "Deployment", "genfleet-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert by_kind(docs, "PodDisruptionBudget", "genfleet-worker")["spec"]["maxUnavailable"] == 1


def test_settings_in_the_configmap_and_secret_are_ones_genfleet_reads():
    docs = render("base")
    known = {f"GENFLEET_{name.upper()}" for name in Settings.model_fields}
    for kind, name, field in (("ConfigMap", "genfleet-config", "data"), ("Secret", "genfleet-secrets", "stringData")):
        keys = {k for k in by_kind(docs, kind, name)[field] if k.startswith("GENFLEET_")}
        assert keys <= known, keys - known
    Settings(**{k.removeprefix("GENFLEET_").lower(): v
                for k, v in by_kind(docs, "ConfigMap", "genfleet-config")["data"].items() if k.startswith("GENFLEET_")})


def test_keda_scales_on_every_priority_list_of_every_served_model_and_can_reach_zero():
    base, zero = render("base"), render("overlays/scale-to-zero")
    scaled = by_kind(base, "ScaledObject", "genfleet-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "genfleet-worker"
    # fair share keeps most waiting work in tenants' backlogs, out of kombu's lists: the triggers read the
    # API's genfleet_queue_depth, which counts both, for every priority of every served model's queue
    asked = [re.fullmatch(r'max\(genfleet_queue_depth\{queue="([^"]+)",priority="(\w+)"\}\) or vector\(0\)',
                          t["metadata"]["query"]) for t in scaled["triggers"]]
    config = by_kind(base, "ConfigMap", "genfleet-config")["data"]
    served = settings_of(config)
    assert [m.groups() if m else None for m in asked] == \
        [(queue, p.value) for queue in model_queues(served) for p in PRIORITY_STEPS]
    assert all(t["type"] == "prometheus" for t in scaled["triggers"])
    names = {t["name"] for t in scaled["triggers"]}
    assert set(scaled["advanced"]["scalingModifiers"]["formula"].replace("+", " ").split()) == names
    assert scaled["minReplicaCount"] >= 1
    assert by_kind(zero, "ScaledObject", "genfleet-worker")["spec"]["minReplicaCount"] == 0


def test_prometheus_rule_matches_the_rules_file_and_passes_promtool(tmp_path):
    rule = by_kind(render("base"), "PrometheusRule", "genfleet")
    rules_file = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    assert rule["spec"]["groups"] == rules_file["groups"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    r = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    monitor = by_kind(render("base"), "ServiceMonitor", "genfleet")["spec"]
    assert monitor["jobLabel"] == "genfleet.io/job"
    services = [d for d in render("base") if d["kind"] == "Service"]
    jobs = {s["metadata"]["labels"].get("genfleet.io/job") for s in services}
    assert {"genfleet-api", "genfleet-worker", "genfleet-webhooks"} <= jobs  # what the alerts' `up{job=...}` needs


def test_no_secret_ships_a_working_value_and_genfleet_refuses_the_placeholders():
    secret = by_kind(render("base"), "Secret", "genfleet-secrets")["stringData"]
    assert all(PLACEHOLDER in value for value in secret.values()), secret
    for name in ("GENFLEET_REDIS_URL", "GENFLEET_API_KEYS", "GENFLEET_WEBHOOK_SECRET"):
        with pytest.raises(ValidationError, match=f"{name} still holds the deploy placeholder"):
            Settings(**{name.removeprefix("GENFLEET_").lower(): secret[name]})


def test_gpu_workers_serve_a_named_model_and_the_cpu_demo_the_embedded_one():
    base, demo = render("base"), render("overlays/cpu-demo")
    assert by_kind(base, "ConfigMap", "genfleet-config")["data"]["GENFLEET_MODEL"] == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert by_kind(demo, "ConfigMap", "genfleet-config")["data"]["GENFLEET_MODEL"] == "embedded"
    worker = by_kind(demo, "Deployment", "genfleet-worker")["spec"]["template"]["spec"]
    container = worker["containers"][0]
    assert "tolerations" not in worker and "nvidia.com/gpu" not in str(container["resources"])
    assert {"name": "GENFLEET_DEVICE", "value": "cpu"} in container["env"]


def test_gpu_workers_keep_compiled_kernels_on_a_shared_volume():
    docs = render("base")
    config = by_kind(docs, "ConfigMap", "genfleet-config")["data"]
    settings = Settings(fastpath=config["GENFLEET_FASTPATH"], compile_cache_dir=config["GENFLEET_COMPILE_CACHE_DIR"])
    assert settings.fastpath["*"].compile == "regional" and settings.fastpath["*"].buckets
    worker = by_kind(docs, "Deployment", "genfleet-worker")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in worker["containers"][0]["volumeMounts"]}
    assert mounts["compile-cache"] == str(settings.compile_cache_dir)
    claim = next(v for v in worker["volumes"] if v["name"] == "compile-cache")["persistentVolumeClaim"]["claimName"]
    assert by_kind(docs, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]

"""The Dockerfiles and compose file, checked as written (no Docker engine runs here to build or start them)."""

import re

import yaml

from genfleet.shared.settings import Settings
from tests.deploy.conftest import DEPLOY


def dockerfile(name: str) -> str:
    return (DEPLOY / "docker" / name).read_text()


def test_api_image_is_slim_and_non_root():
    text = dockerfile("api.Dockerfile")
    assert re.search(r"^FROM python:3\.1[1-9]-slim\b", text, re.M)
    instructions = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert re.search(r"^USER 10001$", text, re.M) and "torch" not in instructions
    assert 'pip install .' in text  # the core dependencies only: no worker extra


def test_worker_image_has_cuda_a_model_volume_and_no_root():
    text = dockerfile("worker.Dockerfile")
    assert re.search(r"^FROM nvidia/cuda:\S+-runtime-", text, re.M)
    assert re.search(r"^USER 10001$", text, re.M) and 'VOLUME ["/models"]' in text and "HF_HOME=/models" in text
    assert '".[worker]"' in text and "--index-url" in text  # torch from PyTorch's CUDA index, first


def test_images_copy_what_the_genfleet_namespace_links_to():
    # genfleet/ links to api/, shared/ and workers/: an image that copies the links without their targets
    # installs a package that cannot import
    for name, folders in (("api.Dockerfile", ("genfleet", "shared", "api")),
                          ("worker.Dockerfile", ("genfleet", "shared", "api", "workers"))):
        text = dockerfile(name)
        for folder in folders:
            assert re.search(rf"^COPY {folder} {folder}$", text, re.M), (name, folder)
    assert re.search(r"^COPY workers/__init__.py workers/webhooks.py workers/$", dockerfile("api.Dockerfile"), re.M)


def test_compose_wires_every_service():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "minio", "minio-init", "api", "webhooks", "worker", "worker-cpu", "prometheus",
            "grafana"} <= set(services)
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    assert "mc mb" in " ".join(services["minio-init"]["entrypoint"])
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"] and services["worker"]["profiles"] == ["gpu"]
    cpu = services["worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and cpu["environment"]["GENFLEET_DEVICE"] == "cpu" and "deploy" not in cpu
    assert int(services["worker"]["stop_grace_period"].rstrip("s")) > Settings().hard_time_limit_s
    # the files Prometheus and Grafana mount exist
    for service in ("prometheus", "grafana"):
        for volume in services[service]["volumes"]:
            assert (DEPLOY / volume.split(":")[0]).exists(), volume
    # every genfleet setting named is one Settings knows
    known = {f"GENFLEET_{name.upper()}" for name in Settings.model_fields}
    for service in services.values():
        env = service.get("environment") or {}
        assert {k for k in env if k.startswith("GENFLEET_")} <= known

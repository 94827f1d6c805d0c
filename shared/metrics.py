"""Every Prometheus metric genfleet exports. Names start with `genfleet_`, units are suffixes.

Worker metrics are written by prefork children; the worker's main process serves them all with
prometheus-client's multiprocess collector (PROMETHEUS_MULTIPROC_DIR, set by `genfleet worker`).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

# API
HTTP_REQUESTS = Counter("genfleet_http_requests_total", "HTTP requests served", ["route", "method", "status"])
HTTP_LATENCY = Histogram("genfleet_http_request_duration_seconds", "HTTP request latency", ["route", "method"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
JOBS_ENQUEUED = Counter("genfleet_jobs_enqueued_total", "Jobs accepted and queued", ["model", "priority"])
BATCHES_ENQUEUED = Counter("genfleet_batches_enqueued_total", "Batches accepted")
REJECTED = Counter("genfleet_http_rejected_total", "Requests refused at the edge", ["reason"])
WEBHOOKS = Counter("genfleet_webhooks_total", "Webhook delivery attempts by outcome", ["outcome"])
# genfleet_queue_depth and genfleet_queue_oldest_age_seconds are read from Redis at scrape time (api/queue_metrics.py)

# Worker
JOBS_FINISHED = Counter("genfleet_jobs_finished_total", "Jobs that reached a terminal status", ["model", "status"])
IMAGES_GENERATED = Counter("genfleet_images_generated_total", "Images written to storage", ["model"])
IMAGES_SIGNED = Counter("genfleet_images_signed_total", "Images stored with Content Credentials", ["model"])
IMAGES_WATERMARKED = Counter("genfleet_images_watermarked_total", "Images stored with an invisible watermark",
                             ["model"])
SIGNING_FAILURES = Counter("genfleet_signing_failures_total", "Failed attempts to sign an image (each retry counts)",
                           ["model"])
SAMPLE_SECONDS = Histogram("genfleet_sample_seconds", "Pipeline call duration", ["model"], buckets=_SECONDS)
BATCH_IMAGES = Histogram("genfleet_batch_images", "Images in the pipeline call a job's images were part of",
                         ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128))
STORE_SECONDS = Histogram("genfleet_store_seconds", "PNG encode and upload duration per job", ["model"],
                          buckets=_SECONDS)
QUEUE_WAIT_SECONDS = Histogram("genfleet_queue_wait_seconds", "Time from enqueue to start", ["model"],
                               buckets=_SECONDS)
QUALITY_SCORE = Histogram("genfleet_quality_score", "Quality score of each image kept", ["model"],
                          buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0))
QUALITY_RETRIES = Counter("genfleet_quality_retries_total", "Images regenerated for scoring under the bar",
                          ["model", "reason"])
ENCODE_SECONDS = Histogram("genfleet_encode_seconds", "PNG encoding per job", ["model"], buckets=_SECONDS)
UPLOAD_SECONDS = Histogram("genfleet_upload_seconds", "Storage uploads per job (images and manifest)", ["model"],
                           buckets=_SECONDS)
JOB_SECONDS = Histogram("genfleet_job_duration_seconds", "End to end: enqueue to terminal status", ["model"],
                        buckets=_SECONDS)
IN_FLIGHT = Gauge("genfleet_jobs_in_flight", "Jobs being sampled or written now", multiprocess_mode="livesum")
GPU_MEMORY_USED = Gauge("genfleet_gpu_memory_used_bytes", "Accelerator memory allocated by torch",
                        ["device"], multiprocess_mode="livemax")
GPU_MEMORY_TOTAL = Gauge("genfleet_gpu_memory_total_bytes", "Accelerator memory in all", ["device"],
                         multiprocess_mode="livemax")
GPU_SECONDS = Counter("genfleet_gpu_seconds_total", "Seconds of pipeline calls on a GPU", ["model"])
RECONCILED = Counter("genfleet_jobs_reconciled_total",
                     "Unfinished jobs whose message was lost (a broken pop), published again by the reconciler")
SWEPT = Counter("genfleet_jobs_swept_total", "Recorded jobs a crash had left unpublished, published by the sweeper")
DEAD_LETTERS = Counter("genfleet_dead_letters_total", "Jobs failed for good and kept as dead letters", ["kind"])
MODEL_LOAD_SECONDS = Gauge("genfleet_model_load_seconds", "Seconds the last load of a model took", ["model"],
                           multiprocess_mode="max")
MODEL_LOADS = Counter("genfleet_model_loads_total", "Pipelines loaded into a worker process", ["model"])
MODEL_EVICTIONS = Counter("genfleet_model_evictions_total", "Pipelines evicted to stay within the memory budget",
                          ["model"])
ADAPTER_LOADS = Counter("genfleet_adapter_loads_total", "LoRA adapters loaded into a pipeline", ["model", "adapter"])


def multiprocess_registry() -> CollectorRegistry:
    """A registry that reads every process's metric files (for the worker's main process to serve)."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        raise RuntimeError("PROMETHEUS_MULTIPROC_DIR is not set")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry

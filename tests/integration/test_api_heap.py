"""The API freezes the heap its startup made, so a loaded API's full collections never walk it again (the
figures: docs/benchmarks.md, "One API process under load")."""

import gc

from fastapi.testclient import TestClient

from genfleet.api.app import create_app
from genfleet.shared.settings import Settings


def test_the_api_freezes_its_startup_heap_once_it_has_started(redis, redis_url, tmp_path):
    gc.unfreeze()
    app = create_app(Settings(redis_url=redis_url, queue="genfleet-heap", storage_url=f"file://{tmp_path}"))
    assert gc.get_freeze_count() == 0  # built, not yet started
    try:
        with TestClient(app) as http:  # runs the lifespan, as uvicorn does
            assert gc.get_freeze_count() > 0
            assert http.get("/healthz").status_code == 200
    finally:
        gc.unfreeze()  # this test process's heap is its own business

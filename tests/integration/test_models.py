"""The models users bring, end to end through the HTTP API, Redis, a worker process and S3: image-to-image and
inpainting from uploaded or stored inputs, a LoRA adapter per job, and one worker serving three models with room
for two. Bad inputs are refused at the edge with the field at fault, and nothing is queued."""

import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from genfleet.shared import keys
from genfleet.shared.queue import model_queues
from genfleet.workers.architectures import save
from tests.helpers import BUCKET, depth, free_port, make_lora, wait_for, wait_terminal


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def stored(s3, stack, key: str) -> Image.Image:
    prefix = stack.env["GENFLEET_STORAGE_URL"].removeprefix(f"s3://{BUCKET}/")
    return Image.open(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read()))


def run(api: str, **body) -> dict:
    resp = httpx.post(f"{api}/v1/jobs", json={"prompt": "a purple cat with a red hat", "seed": 3, **body})
    assert resp.status_code == 202, resp.text
    return wait_terminal(api, resp.json()["id"])


def upload(api: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{api}/v1/inputs", content=data, headers={"content-type": "image/png"})


def test_image_to_image_and_inpainting_from_stored_and_uploaded_inputs(stack, s3):
    api = stack.start_api()
    stack.start_worker()
    source = run(api)
    assert source["status"] == "succeeded"
    out = source["outputs"][0]
    picture = stored(s3, stack, out["key"]).convert("RGB")
    # the input named by its s3:// URL, and by its presigned link: both are objects of this server's storage
    for ref in (out["url"], out["download_url"]):
        redrawn = run(api, prompt="a green cat with a blue hat", task="image-to-image", image=ref, strength=0.6)
        assert redrawn["status"] == "succeeded", redrawn["error"]
        assert redrawn["request"]["image"] == out["key"] and redrawn["request"]["width"] == picture.width
        image = stored(s3, stack, redrawn["outputs"][0]["key"])
        assert image.text["task"] == "image-to-image" and image.text["strength"] == "0.6"
        assert image.size == picture.size
        assert np.abs(np.asarray(image.convert("RGB"), np.int16) - np.asarray(picture, np.int16)).mean() > 1
    mask = np.zeros((picture.height, picture.width), np.uint8)
    mask[: picture.height // 2] = 255  # repaint the top half
    ids = [upload(api, png(im)).json()["id"] for im in (picture, Image.fromarray(mask))]
    assert upload(api, png(picture)).json()["id"] == ids[0]  # the same picture is stored once
    done = run(api, prompt="a purple cat with a green hat", task="inpaint", image=ids[0], mask=ids[1])
    assert done["status"] == "succeeded", done["error"]
    assert done["request"]["strength"] == 1.0  # the default for inpainting, recorded
    painted = np.asarray(stored(s3, stack, done["outputs"][0]["key"]).convert("RGB"), np.int16)
    keep = mask == 0
    assert np.array_equal(painted[keep], np.asarray(picture, np.int16)[keep])  # outside the mask: untouched
    assert np.abs(painted[~keep] - np.asarray(picture, np.int16)[~keep]).mean() > 1


def test_bad_inputs_get_a_422_naming_the_field_and_nothing_is_queued(stack, redis):
    api = stack.start_api(GENFLEET_MAX_INPUT_BYTES="4096")
    small = upload(api, png(Image.new("RGB", (32, 32), (200, 30, 30)))).json()["id"]
    other_size = upload(api, png(Image.new("L", (48, 32)))).json()["id"]
    huge = upload(api, png(Image.new("RGB", (320, 320)))).json()["id"]  # over the embedded model's 256
    refused = upload(api, b"not a picture at all")
    assert refused.status_code == 422 and "not an image" in refused.text
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert upload(api, png(Image.fromarray(noise))).status_code == 413  # over GENFLEET_MAX_INPUT_BYTES
    cases = [
        ({"task": "image-to-image"}, ["body", "image"]),
        ({"image": small}, ["body", "image"]),  # text-to-image takes none
        ({"task": "image-to-image", "image": "0" * 64}, ["body", "image"]),  # never uploaded
        ({"task": "image-to-image", "image": "https://example.com/cat.png"}, ["body", "image"]),
        ({"task": "image-to-image", "image": "s3://another-bucket/x.png"}, ["body", "image"]),
        ({"task": "image-to-image", "image": huge}, ["body", "image"]),
        ({"task": "image-to-image", "image": small, "width": 64}, ["body", "width"]),
        ({"task": "inpaint", "image": small, "mask": other_size}, ["body", "mask"]),
        ({"task": "inpaint", "image": small}, ["body", "mask"]),
        ({"adapters": [{"name": "nobody-declared-this"}]}, ["body", "adapters", 0, "name"]),
    ]
    for body, loc in cases:
        resp = httpx.post(f"{api}/v1/jobs", json={"prompt": "a cat", **body})
        assert resp.status_code == 422, (body, resp.text)
        assert loc in [e["loc"] for e in resp.json()["detail"]], (body, resp.json())
    batch = httpx.post(f"{api}/v1/batches", json={"prompts": ["a cat"], "params": {"task": "image-to-image",
                                                                                   "image": "0" * 64}})
    assert batch.status_code == 422 and ["body", "params", "image"] in [e["loc"] for e in batch.json()["detail"]]
    assert depth(stack, redis) == 0 and redis.zcard(keys.QUEUED) == 0 and not redis.keys(keys.job("*"))


def test_an_adapter_from_storage_changes_a_job_and_repeats_its_pixels(stack, s3, tmp_path):
    from genfleet.workers.embedded.pipeline import load_embedded

    lora = make_lora(load_embedded().unet, tmp_path / "lora", seed=1)
    prefix = stack.env["GENFLEET_STORAGE_URL"].removeprefix(f"s3://{BUCKET}/")
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/adapters/style.safetensors", Body=lora.read_bytes())
    declared = {"GENFLEET_ADAPTERS": json.dumps({"style": f"s3://{BUCKET}/{prefix}/adapters/style.safetensors"})}
    api = stack.start_api(**declared)
    stack.start_worker(**declared)
    plain, styled, again = run(api), run(api, adapters=[{"name": "style"}]), run(api, adapters=[{"name": "style"}])
    assert [j["status"] for j in (plain, styled, again)] == ["succeeded"] * 3, [styled["error"]]
    pixels = [stored(s3, stack, j["outputs"][0]["key"]) for j in (plain, styled, again)]
    assert pixels[1].tobytes() == pixels[2].tobytes() != pixels[0].tobytes()
    assert json.loads(pixels[1].text["adapters"]) == [{"name": "style", "weight": 1.0}]


def test_a_worker_with_room_for_two_models_serves_three(stack, tmp_path):
    import torch

    from genfleet.workers.models import load_pipeline, weight_bytes

    folders = [str(save("tiny-sd", tmp_path / f"tiny-{n}", seed=n)) for n in range(2)]
    embedded, tiny = (weight_bytes(load_pipeline(m, torch.device("cpu"))) for m in ("embedded", folders[0]))
    budget_mb = -(-(embedded + tiny) // 2**20)  # room for the embedded model and one tiny one, never for all three
    assert budget_mb * 2**20 < embedded + 2 * tiny
    models = {"GENFLEET_EXTRA_MODELS": ",".join(folders), "GENFLEET_MODEL_MEMORY_MB": str(budget_mb)}
    api = stack.start_api(**models)
    port = free_port()
    stack.start_worker(**models, GENFLEET_METRICS_PORT=str(port))
    order = ["embedded", folders[0], folders[1], "embedded", folders[0]]
    for model in order:  # one at a time, so each arrives with the others loaded
        body = {"model": model} if model != "embedded" else {}
        if model != "embedded":
            body.update(width=64, height=64, steps=2)
        assert run(api, **body)["status"] == "succeeded"
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    got = {(s.name, s.labels.get("model")): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert got[("genfleet_model_evictions_total", "embedded")] >= 1
    assert got[("genfleet_model_loads_total", "embedded")] == 2  # evicted, then loaded again
    assert got[("genfleet_model_loads_total", folders[0])] == 2
    # the worker announces what it holds, at most two models, the last one used first
    wait_for(lambda: [w["models"] for w in httpx.get(f"{api}/v1/fleet").json()["workers"]] == [[folders[0],
                                                                                                   "embedded"]],
             15, lambda: httpx.get(f"{api}/v1/fleet").text)
    # a queue per model, each in the queue-depth metric KEDA and the alerts read
    scraped = httpx.get(f"{api}/metrics").text
    queues = {s.labels["queue"] for f in text_string_to_metric_families(scraped) if f.name == "genfleet_queue_depth"
              for s in f.samples}
    assert set(model_queues(stack.settings.model_copy(update={"extra_models": ",".join(folders)}))) < queues


@pytest.mark.parametrize("size", [(40, 32)])
def test_an_input_keeps_its_size(stack, s3, size):
    api = stack.start_api()
    stack.start_worker()
    image_id = upload(api, png(Image.new("RGB", size, (20, 160, 60)))).json()["id"]
    done = run(api, task="image-to-image", image=image_id, strength=0.5)
    assert done["status"] == "succeeded" and stored(s3, stack, done["outputs"][0]["key"]).size == size

"""The OpenAI-compatible routes, with the official `openai` SDK as the client, against a real API and worker on the
embedded model (S3 over HTTP)."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.helpers import wait_for

KEYS = "a:key-a,b:key-b"
QUICK = {"steps": 4}  # the answer's shape is under test, not the pictures


def client(api: str, key: str = "key-a", **kwargs) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{api}/v1", **kwargs)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def job_keys(redis) -> list[bytes]:
    return list(redis.scan_iter("genfleet:job:*"))


def test_generate_in_both_response_formats_and_the_job_is_the_tenants_own(stack):
    api = stack.start_api(GENFLEET_API_KEYS=KEYS)
    stack.start_worker()
    sdk = client(api)
    raw = sdk.images.with_raw_response.generate(prompt="a red cat with a blue hat", n=2, size="48x40",
                                                response_format="b64_json", extra_body={"seed": 7, **QUICK})
    result = raw.parse()
    assert [decoded(base64.b64decode(d.b64_json)).size for d in result.data] == [(48, 40)] * 2
    assert result.size == "48x40" and result.output_format == "png"
    job_id = raw.headers["x-genfleet-job-id"]

    linked = sdk.images.generate(prompt="a green cat with a red hat", n=2, size="64x64", response_format="url",
                                 output_format="jpeg", extra_body=QUICK)
    for item in linked.data:
        image = decoded(httpx.get(item.url, timeout=30).raise_for_status().content)  # presigned: no key needed
        assert image.format == "JPEG" and image.size == (64, 64)

    # the job is a job like any other: the tenant's own, and nobody else's
    mine = httpx.get(f"{api}/v1/jobs/{job_id}", headers={"authorization": "Bearer key-a"}).json()
    assert mine["status"] == "succeeded" and mine["tenant"] == "a" and mine["request"]["num_images"] == 2
    assert httpx.get(f"{api}/v1/jobs/{job_id}", headers={"authorization": "Bearer key-b"}).status_code == 404
    metrics = httpx.get(f"{api}/metrics").text
    assert 'genfleet_tenant_images_total{tenant="a"} 4.0' in metrics, metrics
    assert [m.id for m in sdk.models.list().data] == ["embedded"]


def test_refusals_use_the_sdks_errors_and_queue_nothing(stack, redis):
    api = stack.start_api(GENFLEET_API_KEYS=KEYS)
    sdk = client(api, max_retries=0)
    for size in ("47x40", "big", "4096x4096"):
        with pytest.raises(openai.BadRequestError) as bad:
            sdk.images.generate(prompt="a cat", size=size)  # type: ignore[arg-type]
        assert bad.value.param == "size" and bad.value.status_code == 400, (size, bad.value.body)
    with pytest.raises(openai.BadRequestError) as unknown:
        sdk.images.generate(prompt="a cat", style="vivid")
    assert unknown.value.param == "style" and "cannot honour" in unknown.value.message
    with pytest.raises(openai.BadRequestError) as model:
        sdk.images.generate(prompt="a cat", model="dall-e-3")
    assert model.value.param == "model"
    with pytest.raises(openai.AuthenticationError) as auth:
        client(api, key="wrong").images.generate(prompt="a cat")
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("dall-e-3")
    assert job_keys(redis) == []


def test_past_the_wait_the_error_names_the_job_and_it_is_not_queued_twice(stack, redis):
    api = stack.start_api(GENFLEET_API_KEYS=KEYS, GENFLEET_OPENAI_WAIT_S="1")  # and no worker: it waits
    with pytest.raises(openai.InternalServerError) as late:
        client(api).images.generate(prompt="a cat with a hat")  # the SDK retries 5xx twice unless told not to
    assert late.value.status_code == 504 and late.value.code == "timeout"
    job_id = late.value.body["job_id"]
    assert job_id in late.value.message
    job = httpx.get(f"{api}/v1/jobs/{job_id}", headers={"authorization": "Bearer key-a"}).json()
    assert job["status"] == "queued"
    assert job_keys(redis) == [f"genfleet:job:{job_id}".encode()]


def test_edit_with_a_transparent_mask_repaints_only_there(stack):
    api = stack.start_api(GENFLEET_API_KEYS=KEYS)
    stack.start_worker()
    rng = np.random.default_rng(3)
    picture = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 64x64 blocks
    alpha = np.full((64, 64), 255, np.uint8)
    alpha[16:48, 16:48] = 0  # OpenAI's convention: transparent is repainted
    files = {}
    for name, array, mode in (("image", picture, "RGB"), ("mask", np.dstack([picture, alpha]), "RGBA")):
        buf = io.BytesIO()
        Image.fromarray(array, mode).save(buf, format="PNG")
        files[name] = (f"{name}.png", buf.getvalue(), "image/png")
    sdk = client(api)
    result = sdk.images.edit(image=files["image"], mask=files["mask"], prompt="a red cat with a blue hat",
                             response_format="b64_json", extra_body=QUICK)
    out = np.asarray(decoded(base64.b64decode(result.data[0].b64_json)).convert("RGB"))
    outside = alpha == 255
    assert out.shape == picture.shape
    assert (out[outside] == picture[outside]).all()  # every pixel outside the mask, exactly as sent
    assert np.abs(out[~outside].astype(int) - picture[~outside]).mean() > 10  # and the inside repainted

    no_alpha = files["image"]  # an RGB picture as the mask: nothing in it says what is transparent
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.images.edit(image=files["image"], mask=no_alpha, prompt="a cat")
    assert bad.value.param == "mask" and "alpha" in bad.value.message


def test_a_stream_sends_partial_images_before_the_completed_one(stack):
    api = stack.start_api(GENFLEET_API_KEYS=KEYS)
    stack.start_worker()
    events = list(client(api).images.generate(prompt="a blue cat with a yellow hat", stream=True, partial_images=3,
                                              extra_body={"steps": 60}))
    kinds = [e.type for e in events]
    assert kinds[-1] == "image_generation.completed" and kinds.count("image_generation.completed") == 1, kinds
    partials = [e for e in events if e.type == "image_generation.partial_image"]
    assert 1 <= len(partials) <= 3, kinds
    assert [p.partial_image_index for p in partials] == list(range(len(partials)))
    assert decoded(base64.b64decode(partials[0].b64_json)).format == "JPEG"
    assert decoded(base64.b64decode(events[-1].b64_json)).size == (64, 64)


def test_a_job_with_previews_off_sends_none_and_one_watched_gets_them(stack, redis):
    api = stack.start_api()
    stack.start_worker()
    quiet = httpx.post(f"{api}/v1/jobs", json={"prompt": "a red cat", "steps": 60}).json()["id"]
    asked = httpx.post(f"{api}/v1/jobs", json={"prompt": "a red cat", "steps": 60, "previews": True}).json()["id"]

    def ended(job_id: str) -> bool:
        return httpx.get(f"{api}/v1/jobs/{job_id}").json()["status"] == "succeeded"

    wait_for(lambda: ended(quiet) and ended(asked), 300, "the jobs never finished")
    kinds = {job_id: [f[b"event"] for _, f in redis.xrange(f"genfleet:events:{job_id}")] for job_id in (quiet, asked)}
    assert b"progress" in kinds[quiet] and b"progress" in kinds[asked] and b"preview" not in kinds[asked], kinds
    assert redis.xlen(f"genfleet:previews:{quiet}") == 0 < redis.xlen(f"genfleet:previews:{asked}")

"""OpenAI Images requests made into genfleet jobs, and OpenAI's masks made into genfleet's."""

import io

import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError
from PIL import Image

from genfleet.api.inputs import Unusable
from genfleet.api.openai_edits import white_where_transparent
from genfleet.api.openai_errors import from_validation
from genfleet.api.openai_schema import ImageGeneration, job_request, parse
from genfleet.shared.registry import Registry
from genfleet.shared.schema import OutputFormat, Task

pytestmark = pytest.mark.unit


def refusal(**body) -> tuple[str | None, str]:
    with pytest.raises(RequestValidationError) as e:
        job_request(parse(ImageGeneration, {"prompt": "a cat", **body}), "embedded", Registry())
    error = from_validation(e.value)
    return error.param, error.message


def test_a_request_becomes_the_job_it_asks_for():
    job = job_request(parse(ImageGeneration, {"prompt": "a cat", "n": 3, "size": "48x40", "quality": "high",
                                              "output_format": "webp", "seed": 5}), "embedded", Registry())
    assert (job.num_images, job.width, job.height, job.seed) == (3, 48, 40, 5)
    assert job.steps == 18 and job.output_format is OutputFormat.webp  # 1.5x the embedded model's 12
    assert job.task is Task.text_to_image and not job.previews
    auto = job_request(parse(ImageGeneration, {"prompt": "a cat", "stream": True}), "embedded", Registry())
    assert auto.steps is None and auto.width is None and auto.previews  # the model's own; a stream wants previews
    turbo = Registry().spec("stabilityai/sd-turbo")
    assert [turbo.steps_for(q) for q in ("low", "medium", "high", "max")] == [1, 1, 2, 2]


@pytest.mark.parametrize(("body", "param"), [
    ({"size": "47x40"}, "size"), ({"size": "512"}, "size"), ({"size": "4096x4096"}, "size"), ({"n": 0}, "n"),
    ({"n": 17}, "n"), ({"quality": "ultra"}, "quality"), ({"response_format": "raw"}, "response_format"),
    ({"output_format": "gif"}, "output_format"), ({"background": "transparent"}, "background"),
    ({"prompt": ""}, "prompt"), ({"partial_images": 4}, "partial_images"), ({"steps": 0}, "steps"),
])
def test_what_cannot_be_served_is_refused_by_the_requests_own_name(body, param):
    assert refusal(**body)[0] == param


def test_a_field_genfleet_cannot_honour_is_named_not_ignored():
    param, message = refusal(style="vivid")
    assert param == "style" and "cannot honour" in message


def test_transparent_in_an_openai_mask_is_white_in_genfleets():
    alpha = np.full((8, 8), 255, np.uint8)
    alpha[2:5, 3:6] = 0
    alpha[0, 0] = 100  # mostly transparent: repainted
    buf = io.BytesIO()
    Image.fromarray(np.dstack([np.zeros((8, 8, 3), np.uint8), alpha]), "RGBA").save(buf, format="PNG")
    mask = np.asarray(Image.open(io.BytesIO(white_where_transparent(buf.getvalue()))))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    assert ((mask == 255) == (alpha < 128)).all()
    rgb = io.BytesIO()
    Image.new("RGB", (8, 8)).save(rgb, format="PNG")
    with pytest.raises(Unusable, match="alpha"):
        white_where_transparent(rgb.getvalue())

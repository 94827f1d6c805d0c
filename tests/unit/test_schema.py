import pytest
from pydantic import ValidationError

from genfleet.shared.schema import Job, JobRequest, JobStatus


def fields_at_fault(**body) -> set[str]:
    with pytest.raises(ValidationError) as e:
        JobRequest(**body)
    return {".".join(map(str, err["loc"])) for err in e.value.errors()}


def test_minimal_request_takes_defaults():
    req = JobRequest(prompt="a cat")
    assert (req.num_images, req.width, req.seed, req.priority.value) == (1, None, None, "normal")


@pytest.mark.parametrize("body, field", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"prompt": "a", "width": 7}, "width"),
    ({"prompt": "a", "height": 100}, "height"),
    ({"prompt": "a", "steps": 100000}, "steps"),
    ({"prompt": "a", "num_images": 17}, "num_images"),
    ({"prompt": "a", "num_images": 0}, "num_images"),
    ({"prompt": "a", "seed": -1}, "seed"),
    ({"prompt": "a", "guidance": 99}, "guidance"),
    ({"prompt": "a", "priority": "urgent"}, "priority"),
    ({"prompt": "a", "colour": "red"}, "colour"),
    ({"prompt": "a", "scheduler": "plms"}, "scheduler"),
])
def test_bad_field_is_named(body, field):
    assert field in fields_at_fault(**body)


def test_job_fixes_seed_and_round_trips_as_json():
    job = Job.new(JobRequest(prompt="a cat"), "embedded", tenant="t")
    assert job.status is JobStatus.queued and job.model == "embedded" and job.id.version == 4
    assert 0 <= job.seed < 2**31
    assert Job.model_validate_json(job.model_dump_json()) == job
    assert Job.new(JobRequest(prompt="a", seed=7), "embedded").seed == 7


def test_terminal_statuses():
    assert {s for s in JobStatus if s.terminal} == {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}

from shared.jobstore import JobStore
from shared.schema import Job, JobRequest, JobStatus


def test_create_get_update(redis):
    store = JobStore(redis, 60)
    job = Job.new(JobRequest(prompt="a cat"), "embedded")
    assert store.create(job) and not store.create(job)
    assert store.get(job.id) == job
    assert store.update(job.model_copy(update={"status": JobStatus.running}))
    assert store.status(job.id) is JobStatus.running
    assert 0 < redis.ttl(f"genfleet:job:{job.id}") <= 60


def test_first_terminal_status_stands(redis):
    store = JobStore(redis, 60)
    job = Job.new(JobRequest(prompt="a cat"), "embedded")
    store.create(job)
    assert store.update(job.model_copy(update={"status": JobStatus.cancelled}))
    assert not store.update(job.model_copy(update={"status": JobStatus.succeeded}))
    assert store.status(job.id) is JobStatus.cancelled


def test_update_of_unknown_job_writes_nothing(redis):
    store = JobStore(redis, 60)
    job = Job.new(JobRequest(prompt="a cat"), "embedded")
    assert not store.update(job) and store.get(job.id) is None

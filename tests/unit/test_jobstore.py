from genfleet.shared.jobstore import JobStore
from genfleet.shared.schema import Job, JobRequest, JobStatus


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


def test_dead_letters_keep_reason_newest_first(redis):
    store = JobStore(redis, 60)
    jobs = [Job.new(JobRequest(prompt="a cat"), "embedded") for _ in range(2)]
    store.dead_letter(jobs[0], "storage", "storing images: EndpointConnectionError")
    store.dead_letter(jobs[1], "worker_lost", "the worker died 3 times")
    letters = store.dead_letters()
    assert [d["job_id"] for d in letters] == [str(jobs[1].id), str(jobs[0].id)]
    assert letters[1]["kind"] == "storage" and "EndpointConnectionError" in letters[1]["reason"]


def test_get_many_reads_several_records_in_order(redis):
    store = JobStore(redis, 60)
    jobs = [Job.new(JobRequest(prompt=f"cat {i}"), "embedded") for i in range(3)]
    for job in jobs[:2]:
        store.create(job)
    assert store.get_many([j.id for j in jobs]) == [jobs[0], jobs[1], None]
    assert store.get_many([]) == []

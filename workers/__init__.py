"""The GPU workers (`genfleet.workers`): the Celery app (`app.create_app`), batching, sampling, scoring."""

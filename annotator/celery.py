"""The Celery app. Two queues: ``gpu`` (model work: embeddings, training, automatic masks) and
``cpu`` (imports, exports, bookkeeping); each job kind names its queue in engine.jobs."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotator.settings")

app = Celery("maskloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("gpu"), Queue("cpu"))
app.conf.task_default_queue = "cpu"
app.conf.task_routes = {"engine.tasks.embed_image": {"queue": "gpu"}}
app.conf.broker_connection_retry_on_startup = True
# Which projects' retraining schedules are due is checked every 10 minutes (cheap queries).
app.conf.beat_schedule = {
    "retraining-schedule": {
        "task": "engine.tasks.retraining_schedule",
        "schedule": 600.0,
        "options": {"queue": "cpu"},
    }
}
app.autodiscover_tasks(["engine"])

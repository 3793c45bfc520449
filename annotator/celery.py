"""The Celery app. Two queues: ``gpu`` (model work: embeddings, training, automatic masks) and
``cpu`` (imports, exports, bookkeeping); each job kind names its queue in engine.jobs. The
settings that let jobs survive lost hosts and a restarted broker are in annotator/settings.py
(Celery block) and docs/multihost.md."""

from __future__ import annotations

import os
from typing import Any

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


@app.on_after_configure.connect
def _reconcile_jobs_schedule(sender: Celery, **kwargs: Any) -> None:
    """Beat sends the job reconciler every MASKLOOP_JOB_RECONCILE_SECONDS: it re-sends the
    tasks of quiet jobs that a restarted broker or a lost host took with it (engine.jobs).
    A copy not taken within two periods expires unrun: the next one does the same work."""
    from django.conf import settings

    every = float(settings.MASKLOOP_JOB_RECONCILE_SECONDS)
    sender.add_periodic_task(
        every,
        sender.signature("engine.tasks.reconcile_jobs"),
        name="reconcile-jobs",
        queue="cpu",
        expires=2 * every,
    )


app.autodiscover_tasks(["engine"])

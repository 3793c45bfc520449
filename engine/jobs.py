"""Background jobs: one row per job, the Celery task only does the work.

A job is enqueued after the surrounding transaction commits (a worker must find the row), and
a second request for the same (kind, key) while one is active gets a Conflict, not a copy.
Jobs never run inside the web request, even when the broker is down: then the job is marked
failed with the reason (DECISIONS 8).

A broker may lose messages (Redis restarted without persistence, a host lost with its unacked
tasks): ``reconcile``, run periodically by Celery beat, sends again what a quiet job still
waits for. Sending twice is harmless: a job is claimed once (``run``), and a job kind that
hands its work to other tasks says how to re-send it (``redispatcher``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotator.logs import job_logging
from annotator.models import Job, Project
from engine import events
from engine.errors import Conflict

logger = logging.getLogger(__name__)

# kind -> (celery task name, queue). Tasks live in engine/tasks.py; the table is the routing.
JOB_KINDS: dict[str, tuple[str, str]] = {
    "import_folder": ("engine.tasks.run_job", "cpu"),
    "embed_images": ("engine.tasks.run_job", "gpu"),
    "export": ("engine.tasks.run_job", "cpu"),
    "import_dataset": ("engine.tasks.run_job", "cpu"),
    "automatic": ("engine.tasks.run_job", "gpu"),
    "retrain": ("engine.tasks.run_job", "gpu"),
    # The learned verifier: a dozen weights on image statistics; embeddings it lacks are
    # computed on the CPU too (DESIGN: a few seconds to minutes).
    "train_verifier": ("engine.tasks.run_job", "cpu"),
}


def enqueue(
    project: Project,
    kind: str,
    *,
    key: str = "",
    params: dict[str, Any] | None = None,
    user: Any = None,
) -> Job:
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    for attempt in range(2):
        try:
            with transaction.atomic():
                job = Job.objects.create(
                    project=project,
                    kind=kind,
                    key=key,
                    params=params or {},
                    created_by=user if getattr(user, "pk", None) else None,
                )
            break
        except IntegrityError:
            active = Job.objects.filter(
                project=project, kind=kind, key=key, state__in=Job.ACTIVE_STATES
            ).first()
            if attempt == 0 and active is not None and fail_if_stale(active):
                continue  # its worker is gone: the new job takes over
            raise Conflict(
                f"a {kind} job is already {active.state if active else 'active'} for this project",
                job_id=active.pk if active else None,
            ) from None
    transaction.on_commit(lambda: _send(job))
    return job


def fail_if_stale(job: Job) -> bool:
    """Mark a running job whose worker has been silent too long as failed; True if it was.

    A worker killed mid-job (OOM, a lost machine) never records the outcome, and the job would
    block its key for ever. Queued jobs are never stale: they may wait long for a worker.
    """
    limit = timezone.now() - timedelta(seconds=settings.MASKLOOP_JOB_STALE_SECONDS)
    last = job.heartbeat_at or job.started_at
    if job.state != Job.State.RUNNING or last is None or last > limit:
        return False
    seconds = int((timezone.now() - last).total_seconds())
    failed = Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        state=Job.State.FAILED,
        message=f"worker lost: no sign of life for {seconds} s",
        finished_at=timezone.now(),
    )
    if failed:
        announce(job.pk)
    return bool(failed)


def _send(job: Job) -> None:
    from engine.tasks import run_job

    _, queue = JOB_KINDS[job.kind]
    try:
        result = run_job.apply_async(args=(job.pk,), queue=queue)
    except Exception as exc:  # broker unreachable: say so, never run it here
        logger.exception("could not enqueue job %s", job.pk)
        Job.objects.filter(pk=job.pk).update(
            state=Job.State.FAILED,
            message=f"could not reach the task queue: {exc}",
            finished_at=timezone.now(),
        )
        return
    Job.objects.filter(pk=job.pk).update(celery_id=result.id or "")


class JobContext:
    """Handed to a job's function: reports progress, tells whether it was cancelled."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def progress(self, fraction: float, message: str = "") -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        Job.objects.filter(pk=self.job.pk).update(
            progress=fraction, message=message, heartbeat_at=timezone.now()
        )
        announce(self.job.pk)

    def cancelled(self) -> bool:
        return Job.objects.filter(pk=self.job.pk, state=Job.State.CANCELLED).exists()


#: Returned by a job function that handed its work to other tasks (chunks): the job stays
#: running, and the task that finishes last records the outcome (``finish``).
DETACHED: dict[str, Any] = {"detached": True}

JobFunction = Callable[[JobContext], dict[str, Any]]
_RUNNERS: dict[str, JobFunction] = {}
#: kind -> re-sends the outstanding tasks of a running job of that kind; returns how many.
Redispatcher = Callable[[Job], int]
_REDISPATCHERS: dict[str, Redispatcher] = {}


def runner(kind: str) -> Callable[[JobFunction], JobFunction]:
    """Register the function that does the work of a job kind."""

    def register(function: JobFunction) -> JobFunction:
        _RUNNERS[kind] = function
        return function

    return register


def redispatcher(kind: str) -> Callable[[Redispatcher], Redispatcher]:
    """Register how to re-send the work of a running job of a kind whose tasks may be lost
    (a kind without one is left to ``fail_if_stale``: its single task cannot be told apart
    from a slow one)."""

    def register(function: Redispatcher) -> Redispatcher:
        _REDISPATCHERS[kind] = function
        return function

    return register


def reconcile() -> dict[str, int]:
    """Send again what the broker may have lost; run periodically (Celery beat).

    A queued job still waiting after ``MASKLOOP_JOB_REDISPATCH_SECONDS`` gets its task again
    (``run`` claims a job once, so a second copy does nothing). A running job of a kind with a
    redispatcher that showed no progress for that long gets its outstanding tasks again. Each
    job is re-sent at most once per that period, so a job waiting for a worker that is not
    there does not fill the queue.
    """
    quiet = timezone.now() - timedelta(seconds=settings.MASKLOOP_JOB_REDISPATCH_SECONDS)
    jobs = tasks = 0
    queued = Job.objects.filter(state=Job.State.QUEUED, created_at__lt=quiet)
    for job_id in queued.values_list("pk", flat=True):
        if _claim_redispatch(job_id, Job.State.QUEUED, quiet):
            from engine.tasks import run_job

            job = Job.objects.get(pk=job_id)
            run_job.apply_async(args=(job.pk,), queue=JOB_KINDS[job.kind][1])
            logger.warning("job %s was still queued: its task was sent again", job_id)
            jobs, tasks = jobs + 1, tasks + 1
    running = Job.objects.filter(
        state=Job.State.RUNNING, kind__in=list(_REDISPATCHERS), heartbeat_at__lt=quiet
    )
    for job_id in running.values_list("pk", flat=True):
        if _claim_redispatch(job_id, Job.State.RUNNING, quiet):
            job = Job.objects.get(pk=job_id)
            sent = _REDISPATCHERS[job.kind](job)
            logger.warning("job %s made no progress: %d of its tasks were sent again", job_id, sent)
            jobs, tasks = jobs + 1, tasks + sent
    return {"jobs": jobs, "tasks": tasks}


def _claim_redispatch(job_id: int, state: str, quiet: datetime) -> bool:
    """Record a re-send in the job's params (``redispatch``: count and time) unless the job
    moved on, or was re-sent within the quiet period (by another reconciler, too)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id, state=state).first()
        if job is None or (state == Job.State.RUNNING and (job.heartbeat_at or quiet) > quiet):
            return False
        last = job.params.get("redispatch", {})
        if last.get("at") and datetime.fromisoformat(last["at"]) > quiet:
            return False
        job.params = {
            **job.params,
            "redispatch": {
                "count": int(last.get("count", 0)) + 1,
                "at": timezone.now().isoformat(),
            },
        }
        Job.objects.filter(pk=job_id).update(params=job.params)
    return True


@job_logging  # every record it logs carries the job's id, kind and project
def run(job_id: int) -> None:
    """Run a job in the worker: mark it running, call its function, record the outcome."""
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, state=Job.State.QUEUED).update(
        state=Job.State.RUNNING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        logger.info("job %s is not queued any more; skipping", job_id)
        return
    job = Job.objects.get(pk=job_id)
    function = _RUNNERS[job.kind]
    try:
        result = function(JobContext(job))
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        Job.objects.filter(pk=job_id).update(
            state=Job.State.FAILED, message=str(exc)[:2000], finished_at=timezone.now()
        )
        announce(job_id)
        return
    if result is DETACHED:
        Job.objects.filter(pk=job_id).update(heartbeat_at=timezone.now())
        announce(job_id)
        return
    finish(job_id, result)


def finish(job_id: int, result: dict[str, Any]) -> None:
    """Record a running job's success (a cancelled one keeps its state, with the result)."""
    now = timezone.now()
    if not Job.objects.filter(pk=job_id, state=Job.State.RUNNING).update(
        state=Job.State.SUCCEEDED, progress=1.0, result=result, finished_at=now
    ):
        Job.objects.filter(pk=job_id).update(result=result)
    announce(job_id)


def announce(job_id: int) -> None:
    job = (
        Job.objects.filter(pk=job_id)
        .values("id", "project_id", "kind", "state", "progress", "message")
        .first()
    )
    if job is None:
        return
    try:
        events.publish(job["project_id"], {"event": "job", **job})
    except Exception:
        # Pages learn of progress through the channel layer; a restarting Redis must not fail
        # the job (the next progress report, or a page reload, tells them).
        logger.warning("job %s: could not tell the project's pages", job_id, exc_info=True)


def cancel(job: Job) -> bool:
    """Ask an active job to stop; it stops at its next progress check."""
    return bool(
        Job.objects.filter(pk=job.pk, state__in=Job.ACTIVE_STATES).update(
            state=Job.State.CANCELLED, finished_at=timezone.now()
        )
    )

"""Celery tasks: thin wrappers that take ids and call engine functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Task, shared_task
from django.db import InterfaceError, OperationalError

from annotator.models import Image, ModelVersion
from engine import embeddings, exports, importing, jobs, retraining, verifiers
from engine.io import imports
from engine.stages import automatic

# Imported for their @jobs.runner registrations.
__all__ = ["automatic", "exports", "imports", "retraining", "verifiers"]


@shared_task(name="engine.tasks.run_job")
def run_job(job_id: int) -> None:
    jobs.run(job_id)


#: A chunk that lost the database is tried again after 2, 4, ... 60 s, for about half an hour;
#: after that the reconciler still sends it again once the database is back.
DATABASE_RETRIES = 30


@shared_task(bind=True, name="engine.tasks.automatic_chunk")
def automatic_chunk(self: Task, chunk_id: int) -> None:
    """One chunk of an automatic-stage job (queued on ``gpu``)."""
    try:
        automatic.run_chunk(chunk_id)
    except (OperationalError, InterfaceError) as exc:
        # The database went away (a restart, a fail-over). The image in flight was written in
        # one transaction, so nothing half-stored is left; the chunk resumes where it stopped.
        # Marking the chunk failed would need the database too.
        countdown = min(2 ** (self.request.retries + 1), 60)
        raise self.retry(exc=exc, countdown=countdown, max_retries=DATABASE_RETRIES) from exc
    except Exception as exc:
        automatic.fail_chunk(chunk_id, f"{type(exc).__name__}: {exc}")
        raise


@shared_task(name="engine.tasks.reconcile_jobs")
def reconcile_jobs() -> dict[str, int]:
    """Periodic (Celery beat): send again the tasks of quiet jobs that the broker may have
    lost (engine.jobs.reconcile)."""
    return jobs.reconcile()


@shared_task(name="engine.tasks.retraining_schedule")
def retraining_schedule() -> list[int]:
    """Periodic (Celery beat): launch the retraining cycles that are due."""
    return retraining.run_schedule()


@jobs.runner("import_folder")
def _import_folder(context: jobs.JobContext) -> dict[str, Any]:
    job = context.job
    folder = importing.check_import_root(job.params["folder"])

    def on_progress(done: int, total: int, path: Path) -> bool:
        context.progress(done / max(total, 1), f"{done}/{total} {path.name}")
        return context.cancelled()

    report = importing.import_folder(
        job.project, folder, user=job.created_by, on_progress=on_progress
    )
    return report.as_dict()


@shared_task(name="engine.tasks.embed_image")
def embed_image(image_id: int, version_id: int) -> bool:
    """Embed one new image for the promoted version (queued on ``gpu`` after an upload)."""
    image = Image.objects.filter(pk=image_id).first()
    version = ModelVersion.objects.filter(pk=version_id).first()
    if image is None or version is None or not version.checkpoint:
        return False
    return embeddings.compute(image, version)


@jobs.runner("embed_images")
def _embed_images(context: jobs.JobContext) -> dict[str, Any]:
    """Precompute the embeddings of every image of the project for its promoted version."""
    project = context.job.project
    version = ModelVersion.objects.filter(pk=context.job.params["version"]).first()
    if version is None or not version.checkpoint:
        return {"computed": 0, "present": 0, "detail": "no model version with a checkpoint"}
    image_ids = list(project.images.order_by("id").values_list("pk", flat=True))
    computed = present = 0
    for done, image_id in enumerate(image_ids, start=1):
        image = Image.objects.filter(pk=image_id).first()
        if image is not None:
            if embeddings.compute(image, version):
                computed += 1
            else:
                present += 1
        context.progress(done / len(image_ids), f"{done}/{len(image_ids)} images")
        if context.cancelled():
            break
    return {"computed": computed, "present": present, "version": version.number}

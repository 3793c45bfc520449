"""Celery tasks: thin wrappers that take ids and call engine functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import shared_task

from engine import importing, jobs


@shared_task(name="engine.tasks.run_job")
def run_job(job_id: int) -> None:
    jobs.run(job_id)


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

"""Dataset imports (COCO or SA-1B) from an uploaded archive or a server folder, as a job.

An upload is checked in the request (a bad archive is a 400 and nothing is kept), then kept in
the storage under ``imports/`` until its job has run. The job unpacks it in a temporary
folder (SA-1B shards inside it are checked and unpacked the same way), reads the annotation
files, and stores everything or nothing (engine/io/dataset.py).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import default_storage

from annotator.models import Job, Project
from engine import jobs
from engine.errors import InvalidInput
from engine.importing import check_import_root
from engine.io import archives, coco, sa1b
from engine.io.dataset import Dataset, ImportReport, Progress, store

FORMATS = ("coco", "sa1b")


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {list(FORMATS)}")
    return fmt


def check_upload(path: Path, fmt: str) -> None:
    """A 400 now for an unsafe or unreadable upload."""
    if archives.kind_of(path):
        archives.check(path)
    elif fmt == "coco" or path.suffix == ".json":
        return  # JSON is parsed by the job; the images must then be on the server
    else:
        raise InvalidInput(f"{path.name}: an SA-1B import is a .tar shard (or a .tar/.zip)")


def enqueue_upload(
    project: Project, upload: IO[bytes], name: str, fmt: str, *, user: Any = None
) -> Job:
    _check_format(fmt)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name.rsplit("/", 1)[-1])
    with tempfile.TemporaryDirectory(prefix="maskloop-upload-") as folder:
        path = Path(folder) / (safe or "upload")
        with path.open("wb") as sink:
            shutil.copyfileobj(upload, sink, 1 << 20)
        check_upload(path, fmt)
        with path.open("rb") as handle:
            stored = default_storage.save(
                f"imports/{project.pk}/{uuid.uuid4().hex}/{path.name}", File(handle)
            )
    try:
        return jobs.enqueue(
            project,
            "import_dataset",
            key=stored,
            params={"format": fmt, "upload": stored},
            user=user,
        )
    except BaseException:
        default_storage.delete(stored)
        raise


def enqueue_folder(project: Project, folder: str, fmt: str, *, user: Any = None) -> Job:
    _check_format(fmt)
    resolved = check_import_root(folder)
    return jobs.enqueue(
        project,
        "import_dataset",
        key=f"{fmt}:{resolved}",
        params={"format": fmt, "folder": str(resolved)},
        user=user,
    )


def import_path(
    project: Project,
    source: Path,
    fmt: str,
    *,
    user: Any = None,
    on_progress: Progress | None = None,
) -> ImportReport:
    """Import a folder, an archive, or a COCO JSON file (images beside it)."""
    _check_format(fmt)
    with tempfile.TemporaryDirectory(prefix="maskloop-import-") as work:
        dataset = read_source(source, fmt, Path(work))
        return store(project, dataset, user=user, on_progress=on_progress)


def read_source(source: Path, fmt: str, work: Path) -> Dataset:
    if source.is_dir():
        folder = source
    elif archives.kind_of(source):
        folder = work / "unpacked"
        archives.extract(source, folder)
    elif fmt == "coco" and source.is_file():
        return coco.read(source)
    else:
        raise InvalidInput(f"{source.name} is not a folder, an archive or a COCO JSON file")
    if fmt == "coco":
        return coco.read(coco.find_annotation_file(folder))
    shards = sorted(p for p in folder.rglob("*.tar") if p.is_file())
    if shards:
        unpacked = work / "shards"
        for shard in shards:
            archives.extract(shard, unpacked / shard.stem)
        records = sa1b.read_folder(unpacked) if any(unpacked.rglob("*.json")) else None
        loose = list(folder.rglob("*.json"))
        if records is not None and loose:
            records.images.extend(sa1b.read_folder(folder).images)
        if records is not None:
            return records
    return sa1b.read_folder(folder)


@jobs.runner("import_dataset")
def _run_import(context: jobs.JobContext) -> dict[str, Any]:
    job = context.job
    fmt = job.params["format"]

    def on_progress(done: int, total: int, message: str) -> bool:
        context.progress(done / max(total, 1), message)
        return context.cancelled()

    upload = job.params.get("upload")
    try:
        if upload:
            with tempfile.TemporaryDirectory(prefix="maskloop-import-") as folder:
                local = Path(folder) / Path(upload).name
                with default_storage.open(upload, "rb") as source, local.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
                report = import_path(
                    job.project, local, fmt, user=job.created_by, on_progress=on_progress
                )
        else:
            folder_path = check_import_root(job.params["folder"])
            report = import_path(
                job.project, folder_path, fmt, user=job.created_by, on_progress=on_progress
            )
    except InvalidInput as exc:
        problems = exc.detail.get("problems")
        raise InvalidInput(
            exc.message + (f" Problems: {problems[:20]}" if problems else "")
        ) from None
    finally:
        if upload:
            default_storage.delete(upload)
    return report.as_dict()

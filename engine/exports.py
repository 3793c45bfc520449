"""Exports: SA-1B shards or COCO instances, written as a job, kept for EXPORT_TTL_HOURS.

The file is streamed to a temporary file (rows are read with ``iterator()`` and written one at
a time, images copied in chunks), then handed to the storage, so memory stays flat however
large the project. An ``Export`` row points at the file; past ``expires_at`` it is deleted
with its file and the download answers 404 (make it again).

Files:
- ``sa1b``: ``export-<id>-sa1b.tar``, an uncompressed tar holding the shards ``sa_000000.tar``,
  ``sa_000001.tar``, ... each with ``shard_size`` images: ``sa_<image id>.<ext>`` and
  ``sa_<image id>.json`` per image (see engine/io/sa1b.py).
- ``coco``: ``export-<id>-coco.tar`` with ``annotations.json`` and ``images/`` (or, with
  ``include_images`` false, ``export-<id>-coco.json`` alone).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from annotator.models import Category, Export, Image, Job, Mask, MaskSource, Project
from engine import jobs
from engine.errors import InvalidInput
from engine.io import coco, sa1b
from engine.io.dataset import UNCATEGORIZED

FORMATS = ("sa1b", "coco")
MASKS_AS = ("rle", "polygons")
FILTERS = (
    "stage",
    "source",
    "review_state",
    "category",
    "model_version",
    "created_after",
    "created_before",
)
SOURCES = ("human", "model", "imported")
DEFAULT_SHARD_SIZE = 1000
MASK_FIELDS = (
    "id",
    "image_id",
    "category_id",
    "rle_counts",
    "bbox",
    "area",
    "predicted_iou",
    "stability_score",
    "crop_box",
    "point_coords",
    "is_crowd",
)

Progress = Callable[[float, str], bool | None]


def check_params(data: dict[str, Any]) -> dict[str, Any]:
    """Validated export parameters with defaults (InvalidInput names the bad one)."""
    unknown = set(data) - {"format", "masks_as", "shard_size", "filters", "include_images"}
    if unknown:
        raise InvalidInput(f"unknown export parameters {sorted(unknown)}")
    fmt = data.get("format", "sa1b")
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {list(FORMATS)}")
    masks_as = data.get("masks_as", "rle")
    if masks_as not in MASKS_AS:
        raise InvalidInput(f"masks_as must be one of {list(MASKS_AS)}")
    shard_size = data.get("shard_size", DEFAULT_SHARD_SIZE)
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise InvalidInput("shard_size must be a positive integer")
    include_images = data.get("include_images", True)
    if not isinstance(include_images, bool):
        raise InvalidInput("include_images must be true or false")
    filters = data.get("filters") or {}
    if not isinstance(filters, dict):
        raise InvalidInput("filters must be an object")
    bad = set(filters) - set(FILTERS)
    if bad:
        raise InvalidInput(f"unknown filters {sorted(bad)}; known: {list(FILTERS)}")
    return {
        "format": fmt,
        "masks_as": masks_as,
        "shard_size": shard_size,
        "include_images": include_images,
        "filters": filters,
    }


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _moment(value: Any, name: str) -> datetime:
    if isinstance(value, str):
        moment = parse_datetime(value)
        if moment is None and (day := parse_date(value)) is not None:
            moment = datetime(day.year, day.month, day.day)
        if moment is not None:
            if timezone.is_naive(moment):
                moment = timezone.make_aware(moment, timezone.get_default_timezone())
            return moment
    raise InvalidInput(f"{name} must be an ISO date or date-time")


def select_masks(project: Project, filters: dict[str, Any]) -> QuerySet[Mask]:
    """The project's masks that pass the export filters."""
    masks = Mask.objects.filter(image__project=project)
    if "stage" in filters:
        stages = _as_list(filters["stage"])
        if not set(stages) <= set(MaskSource.values):
            raise InvalidInput(f"stage must be among {MaskSource.values}")
        masks = masks.filter(source_stage__in=stages)
    if "source" in filters:
        source = filters["source"]
        if source not in SOURCES:
            raise InvalidInput(f"source must be one of {list(SOURCES)}")
        if source == "imported":
            masks = masks.filter(source_stage=MaskSource.IMPORTED)
        elif source == "human":
            masks = masks.filter(created_by__isnull=False)
        else:
            masks = masks.filter(created_by__isnull=True).exclude(source_stage=MaskSource.IMPORTED)
    if "review_state" in filters:
        states = _as_list(filters["review_state"])
        if not set(states) <= set(Mask.ReviewState.values):
            raise InvalidInput(f"review_state must be among {Mask.ReviewState.values}")
        masks = masks.filter(review_state__in=states)
    if "category" in filters:
        wanted = _as_list(filters["category"])
        chosen: set[int] = set()
        for row in Category.objects.filter(project=project).values("pk", "name"):
            if row["pk"] in wanted or row["name"] in wanted:
                chosen.add(row["pk"])
        if len(chosen) < len(set(wanted)):
            raise InvalidInput("category filter names a category that is not in this project")
        masks = masks.filter(category_id__in=chosen)
    if "model_version" in filters:
        versions = _as_list(filters["model_version"])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in versions):
            raise InvalidInput("model_version must be a version id or a list of them")
        masks = masks.filter(model_version_id__in=versions)
    if "created_after" in filters:
        masks = masks.filter(created_at__gte=_moment(filters["created_after"], "created_after"))
    if "created_before" in filters:
        masks = masks.filter(created_at__lt=_moment(filters["created_before"], "created_before"))
    return masks


def job_key(params: dict[str, Any]) -> str:
    return (
        "export:"
        + hashlib.sha1(
            json.dumps(params, sort_keys=True).encode(), usedforsecurity=False
        ).hexdigest()
    )


def enqueue(project: Project, data: dict[str, Any], *, user: Any = None) -> Job:
    params = check_params(data)
    select_masks(project, params["filters"])  # a bad filter is a 400 now, not a failed job
    return jobs.enqueue(project, "export", key=job_key(params), params=params, user=user)


def purge_expired(project: Project | None = None) -> int:
    """Delete expired exports and their files; the number deleted."""
    expired = Export.objects.filter(expires_at__lte=timezone.now())
    if project is not None:
        expired = expired.filter(project=project)
    count = 0
    for export in list(expired):
        delete(export)
        count += 1
    return count


def delete(export: Export) -> None:
    name, storage = export.file.name, export.file.storage
    export.delete()
    if name:
        transaction.on_commit(lambda: storage.delete(name))


def available(export: Export) -> bool:
    return (
        export.expires_at > timezone.now()
        and bool(export.file.name)
        and export.file.storage.exists(export.file.name or "")
    )


def make_export(
    project: Project,
    params: dict[str, Any],
    *,
    user: Any = None,
    job: Job | None = None,
    on_progress: Progress | None = None,
) -> Export:
    """Write the export and store it; the Export row."""
    params = check_params(params)
    masks = select_masks(project, params["filters"])
    images = Image.objects.filter(project=project)
    if params["filters"]:
        images = images.filter(pk__in=masks.values("image_id"))
    images = images.order_by("id")
    total_masks = masks.count()
    total_images = images.count()
    export = Export(
        project=project,
        job=job,
        format=params["format"],
        params=params,
        images=total_images,
        masks=total_masks,
        created_by=user if getattr(user, "pk", None) else None,
        expires_at=timezone.now() + timedelta(hours=settings.EXPORT_TTL_HOURS),
    )
    tracker = _Tracker(total_images + total_masks, on_progress)
    with tempfile.TemporaryDirectory(prefix="maskloop-export-") as folder:
        work = Path(folder)
        if params["format"] == "sa1b":
            path = _write_sa1b(work, images, masks, params["shard_size"], tracker)
            suffix = "sa1b.tar"
        else:
            path = _write_coco(work, project, images, masks, params, tracker)
            suffix = "coco.tar" if params["include_images"] else "coco.json"
        export.size = path.stat().st_size
        export.save()
        with path.open("rb") as handle:
            export.file.save(f"export-{export.pk}-{suffix}", File(handle), save=True)
    return export


class _Tracker:
    """Progress every 1% or so; raises when the job was cancelled."""

    def __init__(self, total: int, on_progress: Progress | None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.next_report = 0
        self.on_progress = on_progress

    def step(self, count: int = 1, what: str = "") -> None:
        self.done += count
        if self.on_progress is None or self.done < self.next_report:
            return
        self.next_report = self.done + max(self.total // 100, 1)
        if self.on_progress(min(self.done / self.total, 0.99), what):
            raise InvalidInput("the export was cancelled")


def _masks_by_image(masks: QuerySet[Mask]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(image id, its mask rows) in image order, streamed."""
    rows = masks.order_by("image_id", "id").values(*MASK_FIELDS).iterator(chunk_size=2000)
    current: int | None = None
    group: list[dict[str, Any]] = []
    for row in rows:
        if row["image_id"] != current:
            if current is not None:
                yield current, group
            current, group = row["image_id"], []
        group.append(row)
    if current is not None:
        yield current, group


def _image_rows(images: QuerySet[Image]) -> Iterator[Image]:
    return images.only("id", "file", "file_name", "width", "height").iterator(chunk_size=500)


def _extension(image: Image) -> str:
    name = (image.file.name or "").rsplit("/", 1)[-1]
    return ("." + name.rsplit(".", 1)[-1].lower()) if "." in name else ".png"


def _add_file(archive: tarfile.TarFile, name: str, image: Image) -> None:
    info = tarfile.TarInfo(name)
    info.size = image.file.size
    info.mode = 0o644
    with image.file.open("rb") as handle:
        archive.addfile(info, handle)


def _write_sa1b(
    work: Path, images: QuerySet[Image], masks: QuerySet[Mask], shard_size: int, tracker: _Tracker
) -> Path:
    out = work / "export.tar"
    groups = _masks_by_image(masks)
    pending = next(groups, None)
    shard: tarfile.TarFile | None = None
    shard_path = work / "shard.tar"
    index = in_shard = 0
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as outer:

        def close_shard() -> None:
            nonlocal shard, index
            if shard is not None:
                shard.close()
                outer.add(shard_path, arcname=sa1b.shard_name(index))
                shard_path.unlink()
                shard = None
                index += 1

        for image in _image_rows(images):
            rows: list[dict[str, Any]] = []
            while pending is not None and pending[0] < image.pk:
                pending = next(groups, None)
            if pending is not None and pending[0] == image.pk:
                rows = pending[1]
                pending = next(groups, None)
            if shard is None:
                # Closed by close_shard(), when full or after the last image.
                shard = tarfile.open(shard_path, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
                in_shard = 0
            file_name = f"sa_{image.pk}{_extension(image)}"
            record = sa1b.image_record(
                image_id=image.pk,
                width=image.width,
                height=image.height,
                file_name=file_name,
                masks=rows,
            )
            _add_file(shard, file_name, image)
            sa1b.add_bytes(shard, f"sa_{image.pk}.json", json.dumps(record).encode())
            in_shard += 1
            tracker.step(1 + len(rows), f"image {image.pk}")
            if in_shard >= shard_size:
                close_shard()
        close_shard()
    return out


def _write_coco(
    work: Path,
    project: Project,
    images: QuerySet[Image],
    masks: QuerySet[Mask],
    params: dict[str, Any],
    tracker: _Tracker,
) -> Path:
    json_path = work / "annotations.json"
    categories = [
        {"id": c.pk, "name": c.name, "supercategory": c.supercategory}
        for c in Category.objects.filter(project=project).order_by("id")
    ]
    if masks.filter(category__isnull=True).exists():
        categories.insert(0, {"id": 0, "name": UNCATEGORIZED, "supercategory": ""})
    masks_as = params["masks_as"]
    include_images = params["include_images"]

    def image_rows() -> Iterator[dict[str, Any]]:
        for image in _image_rows(images):
            name = f"images/{image.pk}{_extension(image)}" if include_images else image.file_name
            tracker.step(1, f"image {image.pk}")
            yield {"id": image.pk, "file_name": name, "width": image.width, "height": image.height}

    def annotation_rows() -> Iterator[dict[str, Any]]:
        rows = (
            masks.order_by("image_id", "id")
            .values(*MASK_FIELDS, "image__width", "image__height")
            .iterator(chunk_size=2000)
        )
        for row in rows:
            height, width = row["image__height"], row["image__width"]
            tracker.step(1, f"mask {row['id']}")
            yield {
                "id": row["id"],
                "image_id": row["image_id"],
                "category_id": row["category_id"] or 0,
                "segmentation": coco.segmentation_for(row["rle_counts"], height, width, masks_as),
                "area": row["area"],
                "bbox": row["bbox"],
                "iscrowd": int(row["is_crowd"]),
            }

    info = {
        "description": f"Maskloop project {project.name}",
        "date_created": timezone.now().isoformat(),
        "masks_as": masks_as,
    }
    with json_path.open("w", encoding="utf-8") as handle:
        coco.write(
            handle,
            info=info,
            categories=categories,
            images=image_rows(),
            annotations=annotation_rows(),
        )
    if not include_images:
        return json_path
    out = work / "export.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(json_path, arcname="annotations.json")
        for image in _image_rows(images):
            _add_file(archive, f"images/{image.pk}{_extension(image)}", image)
    return out


@jobs.runner("export")
def _run_export(context: jobs.JobContext) -> dict[str, Any]:
    job = context.job
    purge_expired()

    def on_progress(fraction: float, message: str) -> bool:
        context.progress(fraction, message)
        return context.cancelled()

    export = make_export(
        job.project, job.params, user=job.created_by, job=job, on_progress=on_progress
    )
    return {
        "export": export.pk,
        "format": export.format,
        "size": export.size,
        "images": export.images,
        "masks": export.masks,
        "expires_at": export.expires_at.isoformat(),
        "download": f"/api/projects/{job.project_id}/exports/{export.pk}/download/",
    }

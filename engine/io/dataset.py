"""What an import reads (images with their masks), and storing it all or nothing.

The readers (``coco.read``, ``sa1b.read``) only parse and validate text; ``store`` checks every
image file and every mask against its image first, and writes only when all of them pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction

from annotator.models import Category, Image, Mask, MaskSource, Project
from engine import images, rle
from engine.errors import DuplicateImage, EngineError, InvalidInput

UNCATEGORIZED = "_uncategorized"


@dataclass
class ImportedMask:
    ref: str  # the annotation's id in the source file, for error messages
    segmentation: Any  # COCO RLE dict, or COCO polygons (list of [x, y, ...])
    category: str | None = None
    predicted_iou: float | None = None
    stability_score: float | None = None
    crop_box: list[float] | None = None
    point_coords: list[Any] | None = None
    is_crowd: bool = False


@dataclass
class ImportedImage:
    ref: str
    path: Path
    file_name: str
    width: int | None
    height: int | None
    masks: list[ImportedMask] = field(default_factory=list)


@dataclass
class Dataset:
    images: list[ImportedImage]
    categories: dict[str, str] = field(default_factory=dict)  # name -> supercategory


@dataclass
class ImportReport:
    images: int = 0
    masks: int = 0
    duplicates: list[str] = field(default_factory=list)
    empty_masks: list[str] = field(default_factory=list)
    categories_created: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "masks": self.masks,
            "duplicates": self.duplicates,
            "empty_masks": self.empty_masks,
            "categories_created": self.categories_created,
        }


def to_rle(segmentation: Any, *, height: int, width: int) -> rle.Rle:
    """A COCO segmentation (RLE, compressed or not, or polygons) as a compressed RLE."""
    if isinstance(segmentation, list):
        from engine.io.coco import polygons_to_rle

        return polygons_to_rle(segmentation, height=height, width=width)
    return rle.parse(segmentation, height=height, width=width)


Progress = Callable[[int, int, str], bool | None]


def store(
    project: Project,
    dataset: Dataset,
    *,
    user: Any = None,
    on_progress: Progress | None = None,
) -> ImportReport:
    """Check everything, then write everything (one transaction). Raises InvalidInput listing
    every problem (by image file and annotation id) when anything is wrong; nothing is written
    then."""
    problems: list[dict[str, Any]] = []
    total = len(dataset.images)
    for index, item in enumerate(dataset.images):
        problems.extend(_check_image(item))
        if on_progress is not None:
            on_progress(index + 1, 2 * total, f"checked {item.file_name}")
    if problems:
        first = problems[0]["detail"]
        raise InvalidInput(
            f"{len(problems)} problems in the import; nothing was imported. First: {first}",
            problems=problems[:200],
        )

    report = ImportReport()
    stored: list[Image] = []
    try:
        with transaction.atomic():
            categories = _categories(project, dataset, report)
            for index, item in enumerate(dataset.images):
                prepared = images.prepare(item.path.read_bytes(), item.file_name)
                try:
                    image = images.store(project, prepared, user=user)
                except DuplicateImage:
                    report.duplicates.append(item.file_name)
                    continue
                stored.append(image)
                report.images += 1
                report.masks += _store_masks(image, item, categories, report)
                if on_progress is not None and on_progress(
                    total + index + 1, 2 * total, f"imported {item.file_name}"
                ):
                    raise InvalidInput("the import was cancelled; nothing was imported")
    except BaseException:
        for image in stored:
            images._delete_files(image)
        raise
    return report


def _check_image(item: ImportedImage) -> list[dict[str, Any]]:
    if not item.path.is_file():
        return [{"image": item.file_name, "detail": f"image file {item.file_name} is missing"}]
    try:
        prepared = images.prepare(item.path.read_bytes(), item.file_name)
    except EngineError as exc:
        return [{"image": item.file_name, "detail": exc.message}]
    height, width = prepared.height, prepared.width
    problems: list[dict[str, Any]] = []
    if (item.width, item.height) not in ((None, None), (width, height)):
        problems.append(
            {
                "image": item.file_name,
                "detail": f"{item.file_name} is {width}x{height} pixels, "
                f"not the {item.width}x{item.height} its annotation file says",
            }
        )
    for mask in item.masks:
        try:
            to_rle(mask.segmentation, height=height, width=width)
        except EngineError as exc:
            problems.append(
                {
                    "image": item.file_name,
                    "annotation": mask.ref,
                    "detail": f"annotation {mask.ref} on {item.file_name}: {exc.message}",
                }
            )
    return problems


def _categories(project: Project, dataset: Dataset, report: ImportReport) -> dict[str, Category]:
    existing = {c.name: c for c in Category.objects.filter(project=project)}
    wanted = {m.category for i in dataset.images for m in i.masks if m.category}
    for name in sorted(wanted - set(existing)):
        existing[name] = Category.objects.create(
            project=project, name=name, supercategory=dataset.categories.get(name, "")
        )
        report.categories_created.append(name)
    return existing


def _store_masks(
    image: Image, item: ImportedImage, categories: dict[str, Category], report: ImportReport
) -> int:
    rows = []
    for mask in item.masks:
        parsed = to_rle(mask.segmentation, height=image.height, width=image.width)
        area = rle.area(parsed)
        if area == 0:
            report.empty_masks.append(mask.ref)
            continue
        rows.append(
            Mask(
                image=image,
                category=categories.get(mask.category) if mask.category else None,
                rle_counts=parsed.counts,
                bbox=rle.bbox(parsed),
                area=area,
                source_stage=MaskSource.IMPORTED,
                predicted_iou=mask.predicted_iou,
                stability_score=mask.stability_score,
                crop_box=mask.crop_box,
                point_coords=mask.point_coords or [],
                is_crowd=mask.is_crowd,
            )
        )
    Mask.objects.bulk_create(rows, batch_size=500)
    if rows:
        Image.objects.filter(pk=image.pk).update(state=Image.State.ANNOTATED)
    return len(rows)

"""Saving masks: validation of the RLE against its image, optimistic locking on edits."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from annotator.models import Category, Image, Mask, ModelVersion, PromptLog
from engine import rle
from engine.errors import Conflict, InvalidInput


def _category(image: Image, category_id: int | None) -> Category | None:
    if category_id is None:
        return None
    category = Category.objects.filter(project_id=image.project_id, pk=category_id).first()
    if category is None:
        raise InvalidInput(f"category {category_id} is not a category of this project")
    return category


def _model_version(image: Image, version_id: int | None) -> ModelVersion | None:
    if version_id is None:
        return None
    version = ModelVersion.objects.filter(project_id=image.project_id, pk=version_id).first()
    if version is None:
        raise InvalidInput(f"model version {version_id} is not a version of this project")
    return version


def _apply_segmentation(mask: Mask, image: Image, segmentation: object) -> None:
    parsed = rle.parse(segmentation, height=image.height, width=image.width)
    area = rle.area(parsed)
    if area == 0:
        raise InvalidInput("the mask is empty")
    mask.rle_counts = parsed.counts
    mask.area = area
    mask.bbox = rle.bbox(parsed)


@transaction.atomic
def create_mask(image: Image, data: dict[str, Any], *, user: Any) -> Mask:
    mask = Mask(
        image=image,
        category=_category(image, data.get("category")),
        source_stage=data.get("source_stage") or image.project.stage,
        model_version=_model_version(image, data.get("model_version")),
        predicted_iou=data.get("predicted_iou"),
        stability_score=data.get("stability_score"),
        point_coords=data.get("point_coords") or [],
        crop_box=data.get("crop_box"),
        seconds_spent=data.get("seconds_spent") or 0.0,
        clicks=data.get("clicks") or 0,
        created_by=user,
        updated_by=user,
    )
    _apply_segmentation(mask, image, data["segmentation"])
    mask.save()
    _attach_prompt_logs(mask, data.get("session"))
    if image.state == Image.State.NEW:
        Image.objects.filter(pk=image.pk).update(state=Image.State.IN_PROGRESS)
    return mask


@transaction.atomic
def update_mask(mask: Mask, data: dict[str, Any], *, user: Any) -> Mask:
    """Apply an edit made on ``data['revision']``; a stale revision is a Conflict carrying
    the current one, so the page can offer to reload (DECISIONS 19)."""
    locked = Mask.objects.select_for_update().get(pk=mask.pk)
    revision = data.get("revision")
    if revision is None:
        raise InvalidInput("revision is required to change a mask")
    if revision != locked.revision:
        raise Conflict(
            f"mask {mask.pk} was changed by someone else (revision {locked.revision})",
            current_revision=locked.revision,
        )
    image = locked.image
    if "segmentation" in data:
        before = locked.rle_counts
        _apply_segmentation(locked, image, data["segmentation"])
        if (
            locked.model_version_id
            and not locked.original_rle_counts
            and before != locked.rle_counts
        ):
            locked.original_rle_counts = before
    if "category" in data:
        locked.category = _category(image, data["category"])
    for field in ("review_state", "seconds_spent", "clicks", "predicted_iou"):
        if field in data:
            setattr(locked, field, data[field])
    locked.updated_by = user
    locked.revision += 1
    locked.save()
    _attach_prompt_logs(locked, data.get("session"))
    return locked


def _attach_prompt_logs(mask: Mask, session: Any) -> None:
    if session:
        PromptLog.objects.filter(image=mask.image, session=session, mask__isnull=True).update(
            mask=mask
        )

"""The semi-automatic stage (SA paper, section 4): images come to annotators pre-filled with
the masks the model is confident about; annotators delete wrong ones and add the missing
objects by clicks, which pushes them toward the less prominent objects.

Method (documented in docs/automatic.md): the automatic mask generator with strict filters
on a 16x16 grid, run in the background (the automatic stage's job, with ``source = semi``)
before anyone opens the image: when a project enters the stage, over its images not yet
opened, and for images uploaded while it is in the stage. Pre-filled masks are stored with
``source_stage = "semi"`` and the model version, and shown in a distinct style.
"""

from __future__ import annotations

import contextlib
from typing import Any

from annotator.models import Image, Job, MaskSource, Project, Stage
from engine.errors import EngineError
from engine.predictors import answering_version
from engine.stages import automatic

#: Strict by default: a wrong pre-filled mask costs the annotator a deletion. A project
#: overrides any of these in ``settings["semi"]`` (e.g. thresholds calibrated for its model).
DEFAULTS: dict[str, Any] = {
    "preset": "fast",
    "points_per_side": 16,
    "pred_iou_thresh": 0.92,
    "stability_score_thresh": 0.95,
}


def prefill_settings(project: Project) -> tuple[str, dict[str, Any]]:
    merged = {**DEFAULTS, **(project.settings.get("semi") or {})}
    preset = str(merged.pop("preset"))
    return preset, merged


def enqueue_prefill(
    project: Project, *, images: str | list[int] = "pending", user: Any = None
) -> Job | None:
    """Pre-fill the project's unopened images in the background; None when there is no
    model to do it (GrabCut answers) or a pre-fill of the same version is already running
    (it covers these images unless they came after it started: then the next one does)."""
    if answering_version(project) is None:
        return None
    preset, overrides = prefill_settings(project)
    with contextlib.suppress(EngineError):
        return automatic.enqueue(
            project,
            images=images,
            preset=preset,
            overrides=overrides,
            source=MaskSource.SEMI,
            user=user,
        )
    return None


def set_stage(project: Project, stage: str, *, user: Any = None) -> Job | None:
    """Move the project to a stage; entering the semi-automatic one starts the pre-fill."""
    if stage not in Stage.values:
        raise EngineError(f"stage must be one of {list(Stage.values)}")
    changed = project.stage != stage
    project.stage = stage
    project.save(update_fields=["stage", "updated_at"])
    if changed and stage == Stage.SEMI:
        return enqueue_prefill(project, user=user)
    return None


def on_new_images(project: Project, images: list[Image], *, user: Any = None) -> Job | None:
    """Images uploaded while the project is in the semi-automatic stage get pre-filled."""
    if project.stage != Stage.SEMI or not images:
        return None
    return enqueue_prefill(project, images=[image.pk for image in images], user=user)

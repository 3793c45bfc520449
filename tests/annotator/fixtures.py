"""A populated project for API tests: one of each object, and a second project beside it."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.core.files.base import ContentFile

from annotator.models import Image, Job, Mask, Membership, ModelVersion, Project, PromptLog, Role
from engine import images, masks, rle
from tests.conftest import png_bytes


@dataclass
class World:
    project: Project
    other: Project
    image: Image
    other_image: Image
    mask: Mask
    other_mask: Mask
    job: Job
    version: ModelVersion
    candidate: ModelVersion
    users: dict[str, Any]


@functools.cache
def tiny_checkpoint(name: str = "vit_tiny_test") -> bytes:
    """A real (random-weight) checkpoint of the tiny test configuration (or its _hq twin)."""
    import tempfile

    import torch

    from model.build import build_sam
    from model.checkpoints import save_checkpoint

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tiny.pth"
        save_checkpoint(path, build_sam(name), {"name": name}, half=True)
        return path.read_bytes()


def square_rle(image: Image, x: int = 4, y: int = 4, size: int = 10) -> dict[str, object]:
    mask = np.zeros((image.height, image.width), dtype=bool)
    mask[y : y + size, x : x + size] = True
    return rle.from_mask(mask).to_coco()


def build_world(users: dict[str, Any], project_factory: Any) -> World:
    project = project_factory("Target")
    other = project_factory("Other", with_members=False)
    # The outsider is an admin elsewhere: a real user of the platform, not of this project.
    Membership.objects.filter(project=other, user=users["admin"]).delete()
    Membership.objects.create(project=other, user=users["outsider"], role=Role.ADMIN)

    image = images.store(project, images.prepare(png_bytes(40, 30, seed=1), "a.png"))
    other_image = images.store(other, images.prepare(png_bytes(40, 30, seed=2), "b.png"))
    mask = masks.create_mask(image, {"segmentation": square_rle(image)}, user=users["annotator"])
    other_mask = masks.create_mask(
        other_image, {"segmentation": square_rle(other_image)}, user=users["outsider"]
    )
    PromptLog.objects.create(
        image=image,
        user=users["annotator"],
        session="8a4f0e8e-6b0b-4c55-9d55-0d0f4cf1d2a1",
        kind="point",
        data={"x": 5, "y": 5, "label": 1},
    )
    job = Job.objects.create(project=project, kind="import_folder", key="/nowhere")
    version = ModelVersion.objects.create(
        project=project, number=0, state="promoted", config={"name": "vit_tiny_test"}
    )
    version.checkpoint.save("v0.pth", ContentFile(tiny_checkpoint()), save=True)
    candidate = ModelVersion.objects.create(project=project, number=1, parent=version)
    return World(
        project, other, image, other_image, mask, other_mask, job, version, candidate, users
    )


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of every table the API can change."""
    from django.contrib.auth import get_user_model

    from annotator.models import Category

    tables = [
        Project,
        Membership,
        Category,
        Image,
        Mask,
        PromptLog,
        Job,
        ModelVersion,
        get_user_model(),
    ]
    return {model.__name__: list(model.objects.order_by("pk").values()) for model in tables}

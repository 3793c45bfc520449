"""The demo project of the README's first command: real photos shipped with scikit-image."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image as PILImage

from annotator.models import Project
from engine import images
from engine.errors import DuplicateImage
from engine.projects import create_project
from engine.starter import add_starter_version

DEMO_NAME = "Demo: scikit-image photos"
DEMO_PHOTOS = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "stereo_motorcycle",
    "camera",
    "coins",
    "immunohistochemistry",
]
DEMO_CATEGORIES = ["person", "animal", "object", "vehicle", "food"]


def demo_photos() -> list[tuple[str, bytes]]:
    """(file name, PNG bytes) of the photos that ship inside scikit-image (no download)."""
    from skimage import data

    photos = []
    for name in DEMO_PHOTOS:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            pixels = loader()
        except Exception:  # a photo that would need a download (pooch) is skipped
            continue
        if isinstance(pixels, tuple):
            pixels = pixels[0]
        buffer = io.BytesIO()
        PILImage.fromarray(pixels).convert("RGB").save(buffer, format="PNG")
        photos.append((f"{name}.png", buffer.getvalue()))
    return photos


def ensure_demo_project(owner: Any) -> tuple[Project, int]:
    """The demo project (created once) and how many photos were added now."""
    project = Project.objects.filter(name=DEMO_NAME).first()
    if project is None:
        project = create_project(
            DEMO_NAME,
            owner=owner,
            description="Photos shipped with scikit-image, to try Maskloop right away.",
            categories=DEMO_CATEGORIES,
        )
    else:
        # A demo made before a starter model was installed gets it now.
        add_starter_version(project, user=owner)
    added = 0
    for file_name, data in demo_photos():
        try:
            images.store(project, images.prepare(data, file_name), user=owner)
            added += 1
        except DuplicateImage:
            pass
    return project, added

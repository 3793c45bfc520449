"""The web host's part in tests/multihost: a project of N images (stored in the bucket) with a
tiny model version, and an automatic-stage job started through the engine, as the API's
``POST /api/projects/{id}/automatic/`` starts it. Run in the web host's namespace:

    python -m tests.multihost.starter --name P --images 24

The last line of its output is ``{"project": id, "version": id, "job": id, "images": [ids]}``.
"""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
from PIL import Image as PILImage

#: Generator settings: 8x8 prompts on one layer (the ``fast`` preset), no filtering (a
#: random-weight model is not calibrated, DECISIONS 12a). About half a second per image on
#: one core of this machine: long enough to act mid-job, short enough for the suite.
POINTS_PER_SIDE = 8
WIDTH, HEIGHT = 320, 240


def blob_image(seed: int) -> bytes:
    """A red disc on noise, placed by the seed (every image a different file)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 140, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    cx, cy = 80 + 20 * (seed % 8), 70 + 15 * (seed % 6)
    pixels[(xx - cx) ** 2 + (yy - cy) ** 2 < 50**2] = [220, 30, 30]
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--images", type=int, default=24)
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile

    from annotator.models import ModelVersion
    from engine import images
    from engine.projects import create_project
    from engine.stages import automatic
    from tests.annotator.fixtures import tiny_checkpoint

    user, _ = get_user_model().objects.get_or_create(username="multihost-admin")
    project = create_project(args.name, owner=user, categories=["object"])
    ids = [
        images.store(project, images.prepare(blob_image(seed), f"blob{seed}.png")).pk
        for seed in range(args.images)
    ]
    version = ModelVersion.objects.create(
        project=project, number=0, state="promoted", config={"name": "vit_tiny_test"}
    )
    version.checkpoint.save("v0.pth", ContentFile(tiny_checkpoint()), save=True)
    job = automatic.enqueue(
        project,
        version_id=version.pk,
        images="pending",
        preset="fast",
        overrides={
            "points_per_side": POINTS_PER_SIDE,
            "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0,
        },
        user=user,
    )
    print(json.dumps({"project": project.pk, "version": version.pk, "job": job.pk, "images": ids}))


if __name__ == "__main__":
    main()

"""Reviewing model-made masks: what comes next, and the before-vs-after quality figures."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from annotator.models import Mask, ModelVersion
from engine import images, review, rle
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db

H, W = 40, 50


def box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def segmentation(mask: np.ndarray) -> dict[str, Any]:
    return rle.from_mask(mask).to_coco()


@pytest.fixture
def reviewed_world(project_factory: Any) -> Any:
    project = project_factory("Review")
    image = images.store(project, images.prepare(png_bytes(W, H, seed=3), "r.png"))
    version = ModelVersion.objects.create(project=project, number=3, state="promoted")

    def model_mask(mask: np.ndarray, source: str = "automatic") -> Mask:
        encoded = rle.from_mask(mask)
        return Mask.objects.create(
            image=image,
            rle_counts=encoded.counts,
            bbox=rle.bbox(encoded),
            area=rle.area(encoded),
            source_stage=source,
            model_version=version,
            predicted_iou=0.9,
            stability_score=0.96,
        )

    masks = [model_mask(box(0, 0, 10, 10 + i)) for i in range(5)]
    people = Mask.objects.create(
        image=image, rle_counts=masks[0].rle_counts, bbox=[0, 0, 1, 1], area=100,
        source_stage="assisted",
    )  # fmt: skip
    return project, version, masks, people


def test_next_draws_pending_model_masks_at_random_until_none_is_left(
    reviewed_world: Any, users: Any, client_for: Any
) -> None:
    project, _, masks, people = reviewed_world
    rng = random.Random(0)
    drawn = {review.next_to_review(project, rng=rng).pk for _ in range(200)}  # type: ignore[union-attr]
    assert drawn == {m.pk for m in masks}  # every pending one, never the person's mask

    client = client_for(users["reviewer"])
    url = f"/api/projects/{project.pk}/review/next/"
    response = client.get(url, {"exclude": ",".join(str(m.pk) for m in masks[1:])})
    assert response.status_code == 200 and response.data["id"] == masks[0].pk
    assert response.data["source_stage"] == "automatic"
    Mask.objects.filter(pk__in=[m.pk for m in masks]).update(review_state="accepted")
    assert client.get(url).status_code == 204
    assert client.get(url, {"version": "abc"}).status_code == 400
    assert client.get(url, {"source": "assisted"}).status_code == 400


def test_quality_compares_the_model_mask_with_the_corrected_one(
    reviewed_world: Any, users: Any, client_for: Any
) -> None:
    project, version, masks, _ = reviewed_world
    client = client_for(users["reviewer"])

    def patch(mask: Mask, **body: Any) -> Any:
        mask.refresh_from_db()
        url = f"/api/projects/{project.pk}/masks/{mask.pk}/"
        response = client.patch(url, {"revision": mask.revision, **body}, format="json")
        assert response.status_code == 200, response.data
        return response

    patch(masks[0], review_state="accepted")
    # masks[i] is a 10 x (10 + i) box. masks[1] grown by a row, then by another below.
    patch(masks[1], review_state="fixed", segmentation=segmentation(box(0, 0, 10, 12)))
    # masks[2] shrunk by a row: IoU 110/120 = 0.917, above 0.90.
    patch(masks[2], review_state="fixed", segmentation=segmentation(box(0, 0, 10, 11)))
    patch(masks[3], review_state="rejected")
    # The model's mask is kept once, at the first change; a second change keeps it.
    patch(masks[1], segmentation=segmentation(box(0, 0, 10, 13)))
    masks[1].refresh_from_db()
    assert masks[1].original_rle_counts == rle.from_mask(box(0, 0, 10, 11)).counts

    response = client.get(f"/api/projects/{project.pk}/review/quality/")
    assert response.status_code == 200
    (figures,) = response.data
    assert figures == {
        "version": version.number,
        "masks": 5,
        "reviewed": 4,
        "accepted": 1,
        "fixed": 2,
        "rejected": 1,
        # Kept masks: accepted (IoU 1), 11 -> 13 rows (110/130 = 0.85), 12 -> 11 (0.917).
        "share_iou_above_0_90": round(2 / 3, 4),
        "share_iou_above_0_75": 1.0,
        "share_rejected": 0.25,
    }
    assert (
        client_for(users["annotator"])
        .get(f"/api/projects/{project.pk}/review/quality/")
        .status_code
        == 403
    )

"""Masks through the API: RLE in and out, provenance, validation, optimistic locking."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from annotator.models import Mask, PromptLog
from engine import images
from tests.annotator.fixtures import snapshot, square_rle
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(users: Any, project_factory: Any, client_for: Any) -> tuple[Any, Any, Any]:
    project = project_factory()
    image = images.store(project, images.prepare(png_bytes(40, 30, seed=1), "a.png"))
    return project, image, client_for(users["annotator"])


def url(project: Any, suffix: str = "") -> str:
    return f"/api/projects/{project.pk}/masks/{suffix}"


def test_a_mask_round_trips_as_coco_rle(setup: Any) -> None:
    project, image, client = setup
    cat = project.categories.get(name="cat")
    session = str(uuid.uuid4())
    for x in (3, 8):
        client.post(
            f"/api/projects/{project.pk}/prompt-logs/",
            {
                "image": image.pk,
                "session": session,
                "kind": "point",
                "data": {"x": x, "y": 5, "label": 1},
            },
            format="json",
        )
    segmentation = square_rle(image, x=5, y=6, size=7)
    response = client.post(
        url(project),
        {
            "image": image.pk,
            "category": cat.pk,
            "segmentation": segmentation,
            "predicted_iou": 0.91,
            "point_coords": [[8, 9]],
            "seconds_spent": 12.5,
            "clicks": 2,
            "session": session,
        },
        format="json",
    )
    assert response.status_code == 201, response.data
    body = response.data
    assert body["segmentation"] == segmentation
    assert body["area"] == 49
    assert body["bbox"] == [5.0, 6.0, 7.0, 7.0]
    assert body["source_stage"] == "assisted"
    assert body["created_by"] == "annotator"
    assert body["revision"] == 1
    decoded = coco_mask.decode(
        {"size": [30, 40], "counts": body["segmentation"]["counts"].encode()}
    )
    assert decoded.sum() == 49
    assert PromptLog.objects.filter(session=session, mask_id=body["id"]).count() == 2
    listed = client.get(url(project, f"?image={image.pk}")).data
    assert listed["count"] == 1 and listed["results"][0]["id"] == body["id"]
    image.refresh_from_db()
    assert image.state == "in_progress"


@pytest.mark.parametrize(
    "change,field",
    [
        ({"segmentation": {"size": [30, 40], "counts": [5, 6]}}, "sum to"),
        ({"segmentation": {"size": [40, 30], "counts": [1200]}}, "does not match"),
        ({"segmentation": {"size": [30, 40], "counts": "!!"}}, "invalid character"),
        ({"segmentation": {"size": [30, 40], "counts": [1200]}}, "empty"),
        ({"category": 999999}, "not a category of this project"),
        ({"model_version": 999999}, "not a version of this project"),
        ({"image": 999999}, "not an image of this project"),
        ({"point_coords": [[1, 2, 3]]}, "point_coords"),
        ({"seconds_spent": -3}, "seconds_spent"),
        ({"source_stage": "manual"}, "source_stage"),
    ],
)
def test_bad_masks_are_refused_and_nothing_is_stored(
    setup: Any, change: dict[str, Any], field: str
) -> None:
    project, image, client = setup
    body = {"image": image.pk, "segmentation": square_rle(image), **change}
    before = snapshot()
    response = client.post(url(project), body, format="json")
    assert response.status_code == 400
    assert field in str(response.data)
    assert snapshot() == before


def test_a_category_of_another_project_is_refused(setup: Any, project_factory: Any) -> None:
    project, image, client = setup
    foreign = project_factory("elsewhere").categories.first()
    response = client.post(
        url(project),
        {"image": image.pk, "segmentation": square_rle(image), "category": foreign.pk},
        format="json",
    )
    assert response.status_code == 400
    assert Mask.objects.count() == 0


def test_the_later_of_two_saves_gets_409_with_the_newer_version(
    setup: Any, users: Any, client_for: Any
) -> None:
    project, image, annotator = setup
    created = annotator.post(
        url(project), {"image": image.pk, "segmentation": square_rle(image)}, format="json"
    ).data
    reviewer = client_for(users["reviewer"])
    first = reviewer.patch(
        url(project, f"{created['id']}/"),
        {"revision": 1, "segmentation": square_rle(image, 0, 0, 12), "review_state": "fixed"},
        format="json",
    )
    assert first.status_code == 200
    assert first.data["revision"] == 2
    late = annotator.patch(
        url(project, f"{created['id']}/"),
        {"revision": 1, "segmentation": square_rle(image, 2, 2, 3)},
        format="json",
    )
    assert late.status_code == 409
    assert late.data["current_revision"] == 2
    assert late.data["current"]["area"] == 144
    assert Mask.objects.get().area == 144


def test_an_edit_without_revision_is_refused(setup: Any) -> None:
    project, image, client = setup
    created = client.post(
        url(project), {"image": image.pk, "segmentation": square_rle(image)}, format="json"
    ).data
    response = client.patch(
        url(project, f"{created['id']}/"),
        {"segmentation": square_rle(image, 1, 1, 2)},
        format="json",
    )
    assert response.status_code == 400
    assert Mask.objects.get().area == 100


def test_masks_are_filtered_by_review_state(setup: Any, users: Any, client_for: Any) -> None:
    project, image, client = setup
    for x in (0, 12):
        client.post(
            url(project), {"image": image.pk, "segmentation": square_rle(image, x=x)}, format="json"
        )
    first = Mask.objects.order_by("id").first()
    assert first is not None
    client_for(users["reviewer"]).patch(
        url(project, f"{first.pk}/"), {"revision": 1, "review_state": "accepted"}, format="json"
    )
    accepted = client.get(url(project, "?review_state=accepted")).data
    assert [row["id"] for row in accepted["results"]] == [first.pk]


def test_a_mask_from_a_numpy_array_decodes_to_the_same_pixels(setup: Any) -> None:
    project, image, client = setup
    rng = np.random.default_rng(3)
    pixels = rng.random((30, 40)) < 0.3
    encoded = coco_mask.encode(np.asfortranarray(pixels.astype(np.uint8)))
    body = {
        "image": image.pk,
        "segmentation": {"size": [30, 40], "counts": encoded["counts"].decode()},
    }
    created = client.post(url(project), body, format="json").data
    back = coco_mask.decode(
        {"size": [30, 40], "counts": created["segmentation"]["counts"].encode()}
    )
    np.testing.assert_array_equal(back.astype(bool), pixels)

"""Verification by people: the mask queue and its sample, good / bad verdicts, the exhaustivity
check with its hints, the figures, and who may do what (engine/verification.py, the API)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from django.test import Client

from annotator.models import Image, Mask, ModelVersion, Project, VerificationDecision
from engine import images, retraining, rle, verification
from tests.annotator.fixtures import World, build_world, snapshot, square_rle
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db

H, W = 40, 50


def box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def model_mask(
    image: Image, version: ModelVersion | None, mask: np.ndarray, source: str = "automatic"
) -> Mask:
    encoded = rle.from_mask(mask)
    return Mask.objects.create(
        image=image,
        rle_counts=encoded.counts,
        bbox=rle.bbox(encoded),
        area=rle.area(encoded),
        source_stage=source,
        model_version=version,
        predicted_iou=0.91,
        stability_score=0.96,
        point_coords=[[3.0, 4.0]],
    )


@dataclass
class Verify:
    project: Project
    version: ModelVersion
    first: Image  # annotated: four automatic masks, a person's mask, a rejected one
    second: Image  # annotated: two pre-filled (semi) masks
    busy: Image  # still being annotated: its automatic mask waits
    automatic: list[Mask]
    semi: list[Mask]
    people: Mask
    rejected: Mask
    waiting: Mask


@pytest.fixture
def world(project_factory: Any) -> Verify:
    project = project_factory("Verify")
    version = ModelVersion.objects.create(project=project, number=2, state="promoted")
    stored = [
        images.store(project, images.prepare(png_bytes(W, H, seed=10 + i), f"v{i}.png"))
        for i in range(3)
    ]
    first, second, busy = stored
    Image.objects.filter(pk__in=[first.pk, second.pk]).update(state=Image.State.ANNOTATED)
    Image.objects.filter(pk=busy.pk).update(state=Image.State.IN_PROGRESS)
    for image in stored:
        image.refresh_from_db()
    automatic = [model_mask(first, version, box(2 * i, 0, 2 * i + 8, 10)) for i in range(4)]
    semi = [model_mask(second, version, box(0, 0, 10 + i, 10), "semi") for i in range(2)]
    people = model_mask(first, None, box(30, 20, 40, 30), "assisted")
    rejected = model_mask(first, version, box(20, 20, 30, 30))
    Mask.objects.filter(pk=rejected.pk).update(review_state=Mask.ReviewState.REJECTED)
    waiting = model_mask(busy, version, box(0, 0, 5, 5))
    return Verify(project, version, first, second, busy, automatic, semi, people, rejected, waiting)


def post(client: Any, project: Project, **body: Any) -> Any:
    return client.post(f"/api/projects/{project.pk}/verification/", body, format="json")


def tables() -> dict[str, list[dict[str, Any]]]:
    rows = snapshot()
    rows["VerificationDecision"] = list(VerificationDecision.objects.order_by("pk").values())
    return rows


# --------------------------------------------------------------------------- the queue


def test_the_queue_holds_model_masks_of_annotated_images_not_yet_verified(world: Verify) -> None:
    queued = set(verification.mask_queue(world.project).values_list("pk", flat=True))
    # Not the person's mask, not the one rejected in review, not the busy image's.
    assert queued == {m.pk for m in world.automatic + world.semi}
    Mask.objects.filter(pk=world.automatic[0].pk).update(verification_state="good")
    assert world.automatic[0].pk not in verification.mask_queue(world.project).values_list(
        "pk", flat=True
    )

    rng = random.Random(0)
    drawn = {verification.next_mask(world.project, rng=rng).pk for _ in range(200)}  # type: ignore[union-attr]
    assert drawn == queued - {world.automatic[0].pk}
    # The reviewer keeps the image in view while it has masks to verify.
    for _ in range(20):
        found = verification.next_mask(world.project, image_id=world.second.pk, rng=rng)
        assert found is not None and found.image_id == world.second.pk
    skipped = [m.pk for m in world.automatic[1:] + world.semi[1:]]
    assert verification.next_mask(world.project, exclude=skipped) == world.semi[0]


def test_the_sample_is_a_fixed_hash_of_the_mask_id_the_same_in_python_and_sql(
    world: Verify,
) -> None:
    many = [model_mask(world.first, world.version, box(0, 0, 3, 3 + i % 5)) for i in range(60)]
    candidates = [m.pk for m in world.automatic + world.semi + many]
    for fraction in (0.0, 0.2, 0.5, 1.0):
        world.project.settings = {"verification": {"sample": fraction}}
        world.project.save()
        queued = set(verification.mask_queue(world.project).values_list("pk", flat=True))
        expected = {pk for pk in candidates if verification.in_sample(pk, fraction)}
        assert queued == expected, fraction
        assert queued == set(verification.mask_queue(world.project).values_list("pk", flat=True))
    assert not any(verification.in_sample(pk, 0.0) for pk in candidates)
    assert all(verification.in_sample(pk, 1.0) for pk in candidates)
    # Over many ids, the share in the sample is the fraction.
    share = sum(verification.in_sample(pk, 0.2) for pk in range(1, 20_001)) / 20_000
    assert abs(share - 0.2) < 0.01


@pytest.mark.parametrize("bad", [1.5, -0.1, "half", True, None])
def test_a_bad_sample_setting_is_refused(
    bad: Any, world: Verify, users: Any, client_for: Any
) -> None:
    world.project.settings = {"verification": {"sample": bad}}
    world.project.save()
    client = client_for(users["reviewer"])
    response = client.get(f"/api/projects/{world.project.pk}/verification/summary/")
    assert response.status_code == 400
    assert "sample" in response.data["detail"]


# --------------------------------------------------------------------------- mask verdicts


def test_good_accepts_a_pending_mask_and_keeps_a_fixed_one(
    world: Verify, users: Any, client_for: Any
) -> None:
    client = client_for(users["reviewer"])
    pending, fixed = world.automatic[0], world.automatic[1]
    Mask.objects.filter(pk=fixed.pk).update(review_state=Mask.ReviewState.FIXED)

    response = post(
        client, world.project, kind="mask", mask=pending.pk, verdict="good", seconds=2.5
    )
    assert response.status_code == 201, response.data
    assert response.data["verdict"] == "good" and response.data["user"] == "reviewer"
    assert response.data["image_state"] == "annotated"
    assert response.data["seconds"] == 2.5
    assert (
        post(client, world.project, kind="mask", mask=fixed.pk, verdict="good").status_code == 201
    )

    pending.refresh_from_db()
    fixed.refresh_from_db()
    assert (pending.review_state, pending.verification_state) == ("accepted", "good")
    assert (fixed.review_state, fixed.verification_state) == ("fixed", "good")
    assert pending.revision == 2 and pending.updated_by == users["reviewer"]
    # A good automatic mask is in the accepted set the next retraining learns from.
    assert retraining.accepted_masks(world.project).filter(pk=pending.pk).exists()


def test_bad_rejects_the_mask_keeps_it_and_sends_its_image_back(
    world: Verify, users: Any, client_for: Any
) -> None:
    client = client_for(users["reviewer"])
    bad = world.semi[1]
    before = verification.mask_fields(Mask.objects.get(pk=bad.pk))
    response = post(
        client, world.project, kind="mask", mask=bad.pk, verdict="bad", seconds=4, note="two cups"
    )
    assert response.status_code == 201, response.data
    assert response.data["image_state"] == "in_progress"

    bad.refresh_from_db()  # kept, out of the accepted set
    assert (bad.review_state, bad.verification_state) == ("rejected", "bad")
    assert not retraining.accepted_masks(world.project).filter(pk=bad.pk).exists()
    world.second.refresh_from_db()
    assert world.second.state == "in_progress"  # back to annotation: handed out again

    decision = VerificationDecision.objects.get()
    assert (decision.kind, decision.verdict, decision.mask_id) == ("mask", "bad", bad.pk)
    assert decision.image_id == world.second.pk and decision.user == users["reviewer"]
    assert decision.snapshot == before
    assert decision.snapshot["area"] == 110 and decision.snapshot["bbox"] == [0, 0, 11, 10]
    assert decision.snapshot["predicted_iou"] == 0.91
    assert decision.snapshot["stability_score"] == 0.96
    assert decision.snapshot["source_stage"] == "semi"
    assert decision.snapshot["model_version_number"] == 2
    assert decision.snapshot["review_state"] == "pending"
    assert decision.snapshot["counts"] == bad.rle_counts

    # The image's other mask leaves the queue while the image is being annotated again.
    assert not verification.mask_queue(world.project).filter(image=world.second).exists()

    # The annotation page hears of it (any member may ask).
    feedback = client_for(users["annotator"]).get(
        f"/api/projects/{world.project.pk}/verification/feedback/", {"image": world.second.pk}
    )
    assert feedback.status_code == 200
    (rejected,) = feedback.data["rejected"]
    assert rejected["mask"] == bad.pk and rejected["by"] == "reviewer"
    assert rejected["note"] == "two cups"
    assert feedback.data["hints"] is None
    masks = client_for(users["annotator"]).get(
        f"/api/projects/{world.project.pk}/masks/", {"image": world.second.pk}
    )
    states = {m["id"]: m["verification_state"] for m in masks.data["results"]}
    assert states == {world.semi[0].pk: "unverified", bad.pk: "bad"}


def test_a_bad_mask_on_a_complete_image_reopens_it(
    world: Verify, users: Any, client_for: Any
) -> None:
    Image.objects.filter(pk=world.first.pk).update(state=Image.State.REVIEWED)
    client = client_for(users["admin"])
    mask = world.automatic[2]
    assert post(client, world.project, kind="mask", mask=mask.pk, verdict="bad").status_code == 201
    world.first.refresh_from_db()
    assert world.first.state == "in_progress"


def test_a_rerun_of_the_automatic_stage_keeps_verified_masks_and_does_not_repeat_bad_ones(
    world: Verify, users: Any, client_for: Any
) -> None:
    from engine.stages import automatic
    from model.amg.generator import GeneratedMask

    client = client_for(users["reviewer"])
    good, bad = world.automatic[0], world.automatic[3]
    assert post(client, world.project, kind="mask", mask=good.pk, verdict="good").status_code == 201
    assert post(client, world.project, kind="mask", mask=bad.pk, verdict="bad").status_code == 201

    def generated(pixels: np.ndarray) -> GeneratedMask:
        ys, xs = np.nonzero(pixels)
        return GeneratedMask(
            mask=pixels,
            bbox=[float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)],
            area=int(pixels.sum()),
            predicted_iou=0.9,
            stability_score=0.95,
            point_coords=[[1.0, 1.0]],
            crop_box=[0, 0, W, H],
        )

    class Generator:
        def generate(self, rgb: Any, embedding: Any = None) -> list[GeneratedMask]:
            # The two verified masks again, and a new one.
            return [
                generated(box(0, 0, 8, 10)),
                generated(box(6, 0, 14, 10)),
                generated(box(30, 0, 40, 8)),
            ]

    added = automatic.label_image(world.first, world.version, Generator(), job=None, preset="fast")
    assert added == 1
    kept = Mask.objects.filter(image=world.first, source_stage="automatic")
    states = {m.pk: (m.verification_state, m.review_state) for m in kept}
    assert states[good.pk] == ("good", "accepted")
    assert states[bad.pk] == ("bad", "rejected")  # kept, and not proposed again
    assert len(states) == 4  # + the one rejected in review, + the new one
    assert VerificationDecision.objects.filter(mask__isnull=True).count() == 0


def refusals(world: Verify) -> list[tuple[str, dict[str, Any], int]]:
    mask = world.automatic[0].pk
    return [
        ("unknown verdict", {"kind": "mask", "mask": mask, "verdict": "maybe"}, 400),
        ("verdict of the other kind", {"kind": "mask", "mask": mask, "verdict": "yes"}, 400),
        ("unknown kind", {"kind": "object", "mask": mask, "verdict": "good"}, 400),
        ("no mask", {"kind": "mask", "verdict": "good"}, 400),
        ("mask and image", {"kind": "mask", "mask": mask, "image": 1, "verdict": "good"}, 400),
        ("unknown mask", {"kind": "mask", "mask": 999_999, "verdict": "good"}, 400),
        ("person's mask", {"kind": "mask", "mask": world.people.pk, "verdict": "bad"}, 400),
        ("rejected in review", {"kind": "mask", "mask": world.rejected.pk, "verdict": "good"}, 409),
        ("negative seconds", {"kind": "mask", "mask": mask, "verdict": "good", "seconds": -1}, 400),
        ("seconds not a number", {"kind": "mask", "mask": mask, "verdict": "good", "seconds": "x"}, 400),
        ("no image", {"kind": "exhaustivity", "verdict": "yes"}, 400),
        ("image verdict", {"kind": "exhaustivity", "image": world.first.pk, "verdict": "good"}, 400),
        ("no without points", {"kind": "exhaustivity", "image": world.first.pk, "verdict": "no"}, 400),
        (
            "yes with points",
            {"kind": "exhaustivity", "image": world.first.pk, "verdict": "yes", "points": [[1, 1]]},
            400,
        ),
        (
            "point outside",
            {"kind": "exhaustivity", "image": world.first.pk, "verdict": "no", "points": [[60, 5]]},
            400,
        ),
        (
            "point not a pair",
            {"kind": "exhaustivity", "image": world.first.pk, "verdict": "no", "points": [[6]]},
            400,
        ),
        (
            "image being annotated",
            {"kind": "exhaustivity", "image": world.busy.pk, "verdict": "yes"},
            409,
        ),
        ("unknown image", {"kind": "exhaustivity", "image": 999_999, "verdict": "yes"}, 400),
    ]  # fmt: skip


def test_a_refused_decision_changes_nothing(world: Verify, users: Any, client_for: Any) -> None:
    client = client_for(users["reviewer"])
    Mask.objects.filter(pk=world.semi[0].pk).update(verification_state="good")
    cases = refusals(world) + [
        ("verified already", {"kind": "mask", "mask": world.semi[0].pk, "verdict": "bad"}, 409)
    ]
    for name, body, status in cases:
        before = tables()
        response = post(client, world.project, **body)
        assert response.status_code == status, (name, response.data)
        assert "error" in response.data or status == 400, name
        assert tables() == before, f"{name} changed the database"


def test_the_second_verdict_on_a_mask_is_a_conflict(
    world: Verify, users: Any, client_for: Any
) -> None:
    mask = world.automatic[0]
    first = post(
        client_for(users["reviewer"]), world.project, kind="mask", mask=mask.pk, verdict="good"
    )
    assert first.status_code == 201
    second = post(
        client_for(users["admin"]), world.project, kind="mask", mask=mask.pk, verdict="bad"
    )
    assert second.status_code == 409
    assert second.data["error"] == "conflict" and second.data["verification_state"] == "good"
    mask.refresh_from_db()
    assert mask.review_state == "accepted" and VerificationDecision.objects.count() == 1


# --------------------------------------------------------------------------- exhaustivity


def verify_all(client: Any, world: Verify, masks: list[Mask]) -> None:
    for mask in masks:
        response = post(client, world.project, kind="mask", mask=mask.pk, verdict="good")
        assert response.status_code == 201, response.data


def test_an_image_is_checked_once_its_masks_are_verified_and_yes_completes_it(
    world: Verify, users: Any, client_for: Any
) -> None:
    client = client_for(users["reviewer"])
    url = f"/api/projects/{world.project.pk}/verification/next/"
    assert client.get(url, {"kind": "exhaustivity"}).status_code == 204  # masks come first
    verify_all(client, world, world.automatic)

    response = client.get(url, {"kind": "exhaustivity"})
    assert response.status_code == 200
    assert response.data["kind"] == "exhaustivity"
    assert response.data["image"]["id"] == world.first.pk
    assert response.data["image"]["file_url"].endswith(f"/images/{world.first.pk}/file/")
    # The masks it holds now: the automatic ones and the person's, not the rejected one.
    shown = {m["id"] for m in response.data["masks"]}
    assert shown == {m.pk for m in world.automatic} | {world.people.pk}

    done = post(
        client, world.project, kind="exhaustivity", image=world.first.pk, verdict="yes", seconds=7
    )
    assert done.status_code == 201, done.data
    assert done.data["image_state"] == "reviewed"
    assert done.data["snapshot"]["masks"] == 5
    assert done.data["snapshot"]["masks_by_stage"] == {"assisted": 1, "automatic": 4}
    world.first.refresh_from_db()
    assert world.first.state == Image.State.REVIEWED  # complete
    assert client.get(url, {"kind": "exhaustivity"}).status_code == 204


def test_no_stores_the_missed_places_as_hints_and_sends_the_image_back(
    world: Verify, users: Any, client_for: Any
) -> None:
    client = client_for(users["reviewer"])
    verify_all(client, world, world.semi)
    response = post(
        client,
        world.project,
        kind="exhaustivity",
        image=world.second.pk,
        verdict="no",
        points=[[40, 30], [12.54, 5]],
        note="the spoons",
        seconds=11.5,
    )
    assert response.status_code == 201, response.data
    assert response.data["image_state"] == "in_progress"
    decision = VerificationDecision.objects.get(kind="exhaustivity")
    assert decision.points == [[40.0, 30.0], [12.5, 5.0]]
    assert decision.seconds == 11.5 and decision.user == users["reviewer"]

    feedback_url = f"/api/projects/{world.project.pk}/verification/feedback/"
    annotator = client_for(users["annotator"])
    hints = annotator.get(feedback_url, {"image": world.second.pk}).data["hints"]
    assert hints["points"] == decision.points and hints["note"] == "the spoons"
    assert hints["by"] == "reviewer"

    # The annotator adds the spoon and marks the image done; it passes the next check.
    annotator.patch(
        f"/api/projects/{world.project.pk}/images/{world.second.pk}/",
        {"state": "annotated"},
        format="json",
    )
    again = post(client, world.project, kind="exhaustivity", image=world.second.pk, verdict="yes")
    assert again.status_code == 201
    assert annotator.get(feedback_url, {"image": world.second.pk}).data["hints"] is None
    assert annotator.get(feedback_url, {"image": "x"}).status_code == 400


# --------------------------------------------------------------------------- API reads


def test_next_gives_the_mask_with_its_image_and_204_when_none_is_left(
    world: Verify, users: Any, client_for: Any
) -> None:
    client = client_for(users["reviewer"])
    url = f"/api/projects/{world.project.pk}/verification/next/"
    response = client.get(url, {"image": world.second.pk})
    assert response.status_code == 200
    assert response.data["kind"] == "mask"
    assert response.data["mask"]["image"] == world.second.pk
    assert response.data["mask"]["verification_state"] == "unverified"
    assert response.data["image"]["id"] == world.second.pk
    assert (response.data["image"]["width"], response.data["image"]["height"]) == (W, H)
    skipped = ",".join(str(m.pk) for m in world.automatic + world.semi[1:])
    assert client.get(url, {"exclude": skipped}).data["mask"]["id"] == world.semi[0].pk
    assert client.get(url, {"exclude": "a,b"}).status_code == 400
    assert client.get(url, {"kind": "image"}).status_code == 400

    world.project.settings = {"verification": {"sample": 0}}
    world.project.save()
    assert client.get(url).status_code == 204


def test_summary_counts_decisions_and_reviewer_seconds(
    world: Verify, users: Any, client_for: Any
) -> None:
    client = client_for(users["reviewer"])
    url = f"/api/projects/{world.project.pk}/verification/summary/"
    empty = client.get(url).data
    assert empty == {
        "sample": 1.0,
        "masks": {"pending": 6, "good": 0, "bad": 0, "seconds_per_mask": None},
        "images": {
            "pending": 0,
            "waiting": 2,
            "complete": 0,
            "sent_back": 0,
            "seconds_per_image": None,
        },
        "decisions": 0,
    }
    for mask, verdict, seconds in zip(
        world.automatic, ["good", "good", "good", "bad"], [1, 2, 3, 6], strict=True
    ):
        post(client, world.project, kind="mask", mask=mask.pk, verdict=verdict, seconds=seconds)
    post(client, world.project, kind="mask", mask=world.semi[0].pk, verdict="good", seconds=3)
    post(client, world.project, kind="mask", mask=world.semi[1].pk, verdict="good", seconds=3)
    post(
        client, world.project, kind="exhaustivity", image=world.second.pk, verdict="yes", seconds=10
    )
    figures = client.get(url).data
    assert figures["masks"] == {"pending": 0, "good": 5, "bad": 1, "seconds_per_mask": 3.0}
    assert figures["images"] == {
        "pending": 0,  # the first image went back to annotation (its bad mask)
        "waiting": 0,
        "complete": 1,
        "sent_back": 0,
        "seconds_per_image": 10.0,
    }
    assert figures["decisions"] == 7
    listed = client.get(f"/api/projects/{world.project.pk}/verification/", {"verdict": "bad"})
    assert listed.status_code == 200
    assert [d["mask"] for d in listed.data["results"]] == [world.automatic[3].pk]


# --------------------------------------------------------------------------- who may do what


@dataclass
class VerifyWorld:
    world: World
    model_mask: Mask
    other_model_mask: Mask


def build_verify_world(users: Any, project_factory: Any) -> VerifyWorld:
    w = build_world(users, project_factory)
    Image.objects.filter(pk__in=[w.image.pk, w.other_image.pk]).update(state="annotated")
    made = Mask.objects.create(
        image=w.image,
        rle_counts=rle.parse(square_rle(w.image, 20, 10, 6), height=30, width=40).counts,
        bbox=[20, 10, 6, 6],
        area=36,
        source_stage="automatic",
        model_version=w.version,
    )
    other = Mask.objects.create(
        image=w.other_image,
        rle_counts=made.rle_counts,
        bbox=[20, 10, 6, 6],
        area=36,
        source_stage="automatic",
    )
    return VerifyWorld(w, made, other)


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    url: Callable[[VerifyWorld], str]
    allowed: set[str]
    success: int
    body: Callable[[VerifyWorld], dict[str, Any]] | None = None

    def __str__(self) -> str:
        return self.name


def v(vw: VerifyWorld) -> str:
    return f"/api/projects/{vw.world.project.pk}/verification/"


ALL = {"admin", "annotator", "reviewer"}
REVIEWERS = {"admin", "reviewer"}
VERIFY_ENDPOINTS: list[Endpoint] = [
    Endpoint("verification-list", "get", lambda vw: v(vw), REVIEWERS, 200),
    Endpoint("verification-next", "get", lambda vw: f"{v(vw)}next/", REVIEWERS, 200),
    Endpoint(
        "verification-next-image",
        "get",
        lambda vw: f"{v(vw)}next/?kind=exhaustivity",
        REVIEWERS,
        204,  # its automatic mask comes first
    ),
    Endpoint("verification-summary", "get", lambda vw: f"{v(vw)}summary/", REVIEWERS, 200),
    Endpoint(
        "verification-feedback",
        "get",
        lambda vw: f"{v(vw)}feedback/?image={vw.world.image.pk}",
        ALL,
        200,
    ),
    Endpoint(
        "verification-mask",
        "post",
        lambda vw: v(vw),
        REVIEWERS,
        201,
        lambda vw: {"kind": "mask", "mask": vw.model_mask.pk, "verdict": "bad", "seconds": 3},
    ),
    Endpoint(
        "verification-image",
        "post",
        lambda vw: v(vw),
        REVIEWERS,
        201,
        lambda vw: {
            "kind": "exhaustivity",
            "image": vw.world.image.pk,
            "verdict": "no",
            "points": [[5, 5]],
        },
    ),
]


@pytest.mark.parametrize("role", ["admin", "annotator", "reviewer", "outsider"])
@pytest.mark.parametrize("endpoint", VERIFY_ENDPOINTS, ids=str)
def test_role_matrix(
    endpoint: Endpoint, role: str, users: Any, project_factory: Any, client_for: Any
) -> None:
    vw = build_verify_world(users, project_factory)
    client = client_for(users[role])
    before = tables()
    body = endpoint.body(vw) if endpoint.body else None
    response = getattr(client, endpoint.method)(endpoint.url(vw), body, format="json")
    if role in endpoint.allowed:
        expected = endpoint.success
    elif role == "outsider":
        expected = 404
    else:
        expected = 403
    assert response.status_code == expected, (endpoint.name, role, getattr(response, "data", None))
    if expected >= 400 or endpoint.method == "get":
        assert tables() == before, f"{endpoint.name} as {role} changed the database"


def test_anonymous_gets_nothing(users: Any, project_factory: Any, client_for: Any) -> None:
    vw = build_verify_world(users, project_factory)
    client = client_for(None)
    before = tables()
    for endpoint in VERIFY_ENDPOINTS:
        body = endpoint.body(vw) if endpoint.body else None
        response = getattr(client, endpoint.method)(endpoint.url(vw), body, format="json")
        assert response.status_code in (401, 403), endpoint.name
    assert tables() == before


CROSS: list[tuple[str, Callable[[VerifyWorld], str], Callable[[VerifyWorld], Any], int]] = [
    (
        "post",
        v,
        lambda vw: {"kind": "mask", "mask": vw.other_model_mask.pk, "verdict": "bad"},
        400,
    ),
    (
        "post",
        v,
        lambda vw: {
            "kind": "exhaustivity",
            "image": vw.world.other_image.pk,
            "verdict": "no",
            "points": [[5, 5]],
        },
        400,
    ),
    ("get", lambda vw: f"{v(vw)}feedback/?image={vw.world.other_image.pk}", lambda vw: None, 404),
]


@pytest.mark.parametrize("method,url,body,status", CROSS)
def test_another_projects_mask_or_image_is_refused_and_nothing_changes(
    method: str,
    url: Callable[[VerifyWorld], str],
    body: Callable[[VerifyWorld], Any],
    status: int,
    users: Any,
    project_factory: Any,
    client_for: Any,
) -> None:
    """An admin of the target project cannot judge the other project's masks or images."""
    vw = build_verify_world(users, project_factory)
    before = tables()
    response = getattr(client_for(users["admin"]), method)(url(vw), body(vw), format="json")
    assert response.status_code == status, response.data
    assert tables() == before
    assert Mask.objects.get(pk=vw.other_model_mask.pk).verification_state == "unverified"


# --------------------------------------------------------------------------- the pages


def page_client(user: Any) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def config_of(response: Any, element_id: str) -> dict[str, Any]:
    html = response.content.decode()
    start = html.index(f'<script id="{element_id}" type="application/json">')
    start = html.index(">", start) + 1
    return dict(json.loads(html[start : html.index("</script>", start)]))


def test_reviewers_and_admins_open_the_verify_page_others_do_not(world: Verify, users: Any) -> None:
    from django.test import Client

    url = f"/projects/{world.project.pk}/verify/"
    for name in ("reviewer", "admin"):
        response = page_client(users[name]).get(url)
        assert response.status_code == 200
        assert "csrftoken" in response.cookies
        config = config_of(response, "verify-config")
        assert config["mode"] == "mask" and config["sample"] == 1.0
        assert config["urls"]["fix"] == (
            f"/projects/{world.project.pk}/images/{{image}}/annotate/?edit={{mask}}&verify=1"
        )
    images = page_client(users["reviewer"]).get(url, {"mode": "exhaustivity"})
    assert config_of(images, "verify-config")["mode"] == "exhaustivity"
    assert page_client(users["annotator"]).get(url).status_code == 403
    assert page_client(users["outsider"]).get(url).status_code == 404
    assert Client().get(url).status_code == 302  # to the login


def test_the_project_page_links_reviewers_to_verification_with_the_count(
    world: Verify, users: Any
) -> None:
    page = f"/projects/{world.project.pk}/"
    html = page_client(users["reviewer"]).get(page).content.decode()
    assert f'href="/projects/{world.project.pk}/verify/"' in html
    # Six masks; no image is ready (each waits for its masks).
    assert '<span class="badge" id="to-verify">6 to verify</span>' in html
    assert "/verify/" not in page_client(users["annotator"]).get(page).content.decode()
    world.project.settings = {"verification": {"sample": 7}}
    world.project.save()
    html = page_client(users["admin"]).get(page).content.decode()
    assert f'href="/projects/{world.project.pk}/verify/"' in html and "to-verify" not in html


def test_fix_opens_the_mask_in_review_mode_that_comes_back_to_verification(
    world: Verify, users: Any
) -> None:
    mask = world.automatic[1]
    url = f"/projects/{world.project.pk}/images/{world.first.pk}/annotate/?edit={mask.pk}&verify=1"
    response = page_client(users["reviewer"]).get(url)
    config = config_of(response, "annotate-config")
    assert config["review"] == {"mask": mask.pk, "url": f"/projects/{world.project.pk}/verify/"}
    assert b"Back to verification" in response.content
    annotator = config_of(page_client(users["annotator"]).get(url), "annotate-config")
    assert annotator["edit"] == mask.pk and annotator["review"] is None


def test_the_openapi_schema_lists_the_verification_endpoints(users: Any, client_for: Any) -> None:
    response = client_for(users["admin"]).get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for suffix in ("", "next/", "summary/", "feedback/"):
        assert f"/api/projects/{{project_pk}}/verification/{suffix}" in paths, suffix

"""The learned verifier in the engine (issue 14): trained on the reviewers' verdicts as a cpu
job on a real Celery worker, promoted only when it beats SA-1B's fixed filters at the target
precision, then deciding the masks it is sure of while people see the rest and an audit
sample, demoted when the audit disagrees; the exhaustivity ranking; the dashboard figures;
who may do what. Everything through the API, with the real model, database and worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from annotator.models import (
    Image,
    Job,
    Mask,
    ModelVersion,
    Project,
    VerifierScore,
    VerifierVersion,
)
from engine import images, review, rle, verification, verifiers
from tests.annotator.fixtures import World, build_world, snapshot
from tests.annotator.test_annotate import promote_tiny_sam
from tests.annotator.test_jobs_celery import wait_for

pytestmark = pytest.mark.django_db

W, H = 96, 72
#: Below SA-1B's filters (predicted IoU > 0.88, stability >= 0.95): they accept none of them.
LOW_SCORES = {"predicted_iou": 0.86, "stability_score": 0.93}


# --------------------------------------------------------------------------- a world


def objects_of(seed: int) -> list[tuple[int, int, int]]:
    """Two discs (cx, cy, r) per scene, placed by the seed."""
    return [(22 + 2 * (seed % 5), 24 + 3 * (seed % 3), 12), (68 - 2 * (seed % 4), 46, 11)]


def scene(seed: int) -> bytes:
    """Two coloured discs on a darker, noisy background."""
    import io

    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    pixels = rng.integers(40, 80, (H, W, 3), dtype=np.uint8)
    for (cx, cy, r), colour in zip(objects_of(seed), ([225, 50, 40], [40, 210, 70]), strict=True):
        pixels[disc(cx, cy, r)] = colour
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def disc(cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return np.asarray((xx - cx) ** 2 + (yy - cy) ** 2 < r**2)


def good_masks(seed: int) -> list[np.ndarray]:
    return [disc(cx, cy, r) for cx, cy, r in objects_of(seed)]


def bad_masks(seed: int) -> list[np.ndarray]:
    """Each object's disc moved by its radius: half on the object, half on the background."""
    (ax, ay, ar), (bx, by, br) = objects_of(seed)
    return [disc(ax + ar, ay, ar), disc(bx - br, by, br)]


def add_mask(image: Image, pixels: np.ndarray, version: ModelVersion | None, **fields: Any) -> Mask:
    encoded = rle.from_mask(pixels)
    return Mask.objects.create(
        image=image,
        rle_counts=encoded.counts,
        bbox=rle.bbox(encoded),
        area=rle.area(encoded),
        model_version=version,
        **{"source_stage": "automatic", **LOW_SCORES, **fields},
    )


@dataclass
class Engine:
    project: Project
    version: ModelVersion
    seed: int = 0
    decided: list[Mask] = field(default_factory=list)

    def image(self, state: str = Image.State.ANNOTATED) -> Image:
        self.seed += 1
        image = images.store(
            self.project, images.prepare(scene(self.seed), f"scene{self.seed}.png")
        )
        Image.objects.filter(pk=image.pk).update(state=state)
        image.refresh_from_db()
        return image

    def url(self, suffix: str = "") -> str:
        return f"/api/projects/{self.project.pk}/{suffix}"


@pytest.fixture
def engine(project_factory: Any) -> Engine:
    project = project_factory("Verifier")
    return Engine(project, promote_tiny_sam(project))


def verdict(client: Any, engine: Engine, mask: Mask, says: str, seconds: float = 2.0) -> Any:
    response = client.post(
        engine.url("verification/"),
        {"kind": "mask", "mask": mask.pk, "verdict": says, "seconds": seconds},
        format="json",
    )
    assert response.status_code == 201, response.data
    return response


def learnable(engine: Engine, client: Any, images_count: int = 12) -> None:
    """Reviewers who accept the masks that follow their object and reject the shifted ones:
    on every image two good and two bad verdicts."""
    for _ in range(images_count):
        image = engine.image()
        seed = engine.seed
        for pixels in good_masks(seed):
            mask = add_mask(image, pixels, engine.version)
            verdict(client, engine, mask, "good")
            engine.decided.append(mask)
        for pixels in bad_masks(seed):
            mask = add_mask(image, pixels, engine.version)
            verdict(client, engine, mask, "bad")
            engine.decided.append(mask)


def train(client: Any, engine: Engine) -> tuple[Job, VerifierVersion | None]:
    response = client.post(engine.url("verifier/train/"))
    assert response.status_code == 202, response.data
    assert response.data["kind"] == "train_verifier"
    job = wait_for(response.data["id"], timeout=300)
    return job, VerifierVersion.objects.filter(project=engine.project).order_by("-pk").first()


def queued(engine: Engine) -> set[int]:
    return set(verification.mask_queue(engine.project).values_list("pk", flat=True))


def set_options(client: Any, engine: Engine, **options: Any) -> None:
    response = client.patch(engine.url(), {"settings": {"verification": options}}, format="json")
    assert response.status_code == 200, response.data


# --------------------------------------------------------------------------- too few verdicts


def test_too_few_verdicts_is_a_clear_400_and_creates_nothing(
    engine: Engine, users: Any, client_for: Any
) -> None:
    reviewer, admin = client_for(users["reviewer"]), client_for(users["admin"])
    learnable(engine, reviewer, images_count=9)  # 36 verdicts
    before = (Job.objects.count(), VerifierVersion.objects.count())
    response = admin.post(engine.url("verifier/train/"))
    assert response.status_code == 400
    assert response.data["error"] == "invalid"
    assert "at least 40 mask verdicts; this project has 36" in response.data["detail"]
    assert (response.data["decisions"], response.data["good"], response.data["bad"]) == (36, 18, 18)
    assert (Job.objects.count(), VerifierVersion.objects.count()) == before
    summary = reviewer.get(engine.url("verifier/summary/")).data
    assert summary["training"]["ready"] is False and summary["promoted"] is None
    assert summary["training"]["decisions"] == 36 and summary["training"]["minimum"] == 40


def test_verdicts_all_of_one_kind_cannot_train_a_verifier(
    engine: Engine, users: Any, client_for: Any
) -> None:
    reviewer = client_for(users["reviewer"])
    for _ in range(10):  # 40 verdicts, every one good: nothing to tell apart
        image = engine.image()
        for pixels in good_masks(engine.seed) + bad_masks(engine.seed):
            verdict(reviewer, engine, add_mask(image, pixels, engine.version), "good")
    response = client_for(users["admin"]).post(engine.url("verifier/train/"))
    assert response.status_code == 400
    assert (
        "at least 5 good and 5 bad verdicts; this project has 40 good and 0 bad"
        in (response.data["detail"])
    )
    assert not Job.objects.filter(kind="train_verifier").exists()
    assert not VerifierVersion.objects.exists()


def test_the_target_is_set_in_the_project_settings_and_checked(
    engine: Engine, users: Any, client_for: Any
) -> None:
    admin = client_for(users["admin"])
    for bad in (0.3, 1.0, "high", True):
        response = admin.patch(
            engine.url(), {"settings": {"verification": {"target": bad}}}, format="json"
        )
        assert response.status_code == 400, bad
        assert "target" in str(response.data["settings"])
    for bad_options in ({"audit": 2}, {"audit_window": 2.5}, {"sampel": 0.5}):
        response = admin.patch(
            engine.url(), {"settings": {"verification": bad_options}}, format="json"
        )
        assert response.status_code == 400, bad_options
    engine.project.refresh_from_db()
    assert engine.project.settings == {}
    set_options(admin, engine, target=0.97, audit=0.1)
    learnable(engine, client_for(users["reviewer"]), images_count=10)
    response = admin.post(engine.url("verifier/train/"))
    assert response.status_code == 202 and response.data["params"] == {"target": 0.97}
    # One training at a time.
    again = admin.post(engine.url("verifier/train/"))
    assert again.status_code == 409 and again.data["job_id"] == response.data["id"]
    summary = admin.get(engine.url("verifier/summary/")).data
    assert summary["settings"] == {"target": 0.97, "audit": 0.1, "audit_window": 30}


# --------------------------------------------------------------------------- the gate


@pytest.mark.django_db(transaction=True)
def test_a_verifier_that_cannot_beat_the_filters_is_kept_rejected_with_its_figures(
    engine: Engine, users: Any, client_for: Any, worker: Any
) -> None:
    """Reviewers split evenly on identical masks: no threshold reaches 94% precision."""
    reviewer, admin = client_for(users["reviewer"]), client_for(users["admin"])
    for _ in range(12):
        image = engine.image()
        for pixels in good_masks(engine.seed):
            verdict(reviewer, engine, add_mask(image, pixels, engine.version), "good")
            verdict(reviewer, engine, add_mask(image, pixels, engine.version), "bad")
    waiting = engine.image()
    queue_masks = [add_mask(waiting, p, engine.version) for p in good_masks(engine.seed)]

    job, version = train(admin, engine)
    assert job.state == "succeeded", job.message
    assert version is not None and version.state == "rejected"
    assert job.result["state"] == "rejected" and job.result["version"] == 1
    assert version.threshold is None and version.promoted_at is None
    assert version.reason.startswith("rejected: no threshold reaches precision 94.0%")
    figures = version.figures
    assert figures["decisions"] == 48 and figures["calibration"]["precision"] is None
    held = figures["held_out"]
    assert held["images"] >= 1 and held["decisions"] + figures["train"]["decisions"] == 48
    assert figures["verifier"]["accepted"] == 0 and figures["filters"]["accepted"] == 0
    # People go on seeing everything; nothing was scored.
    assert queued(engine) == {m.pk for m in queue_masks}
    assert not VerifierScore.objects.exists()
    listed = admin.get(engine.url("verifier/")).data["results"]
    assert [(v["number"], v["state"]) for v in listed] == [(1, "rejected")]
    assert listed[0]["model_version"] == 0 and listed[0]["reason"] == version.reason


# --------------------------------------------------------------------------- promoted


def assert_calls_follow_thresholds(version: VerifierVersion) -> None:
    for score in VerifierScore.objects.filter(verifier=version):
        (expected,) = verifiers.calls(version, np.array([score.probability]))
        assert score.call == expected, score


@pytest.mark.django_db(transaction=True)
def test_a_promoted_verifier_decides_what_it_is_sure_of_and_people_see_the_rest(
    engine: Engine, users: Any, client_for: Any, worker: Any
) -> None:
    reviewer, admin = client_for(users["reviewer"]), client_for(users["admin"])
    set_options(admin, engine, audit=0.5)
    learnable(engine, reviewer)
    # What waits for people when the verifier is trained: 12 images with a good mask, 12 with
    # a shifted one (one mask per image: a rejection sends back only its own image).
    goods = [
        add_mask(engine.image(), good_masks(engine.seed)[0], engine.version) for _ in range(12)
    ]
    bads = [add_mask(engine.image(), bad_masks(engine.seed)[0], engine.version) for _ in range(12)]
    before = queued(engine)
    assert before == {m.pk for m in goods + bads}

    job, version = train(admin, engine)
    assert job.state == "succeeded", job.message
    assert version is not None and version.state == "promoted", version.reason
    assert version.reason.startswith("promoted: at threshold")
    mine, fixed = version.figures["verifier"], version.figures["filters"]
    assert mine["precision"] >= 0.94 and mine["accepted_share"] > fixed["accepted_share"] == 0
    assert version.model_version_id == engine.version.pk and version.last_decision > 0
    # The promotion scored the whole queue.
    scores = {s.mask_id: s for s in VerifierScore.objects.filter(verifier=version)}
    assert set(scores) == before
    assert_calls_follow_thresholds(version)
    assert sum(job.result["scored"].values()) == len(before)

    # The queue: what it is unsure of, and the audit sample of its confident calls.
    people = {pk for pk, s in scores.items() if s.call == "unsure" or s.audit}
    assert queued(engine) == people and len(people) < len(before)
    assert all(
        s.audit == verification.in_audit(pk, 0.5) for pk, s in scores.items() if s.call != "unsure"
    )
    for mask in Mask.objects.filter(pk__in=before):
        score = scores[mask.pk]
        if score.call == "accept" and not score.audit:
            assert (mask.verification_state, mask.review_state) == ("auto_good", "accepted")
            assert score.applied and score.previous_review_state == "pending"
        elif score.call == "reject" and not score.audit:
            assert (mask.verification_state, mask.review_state) == ("auto_bad", "rejected")
            assert mask.image.state == "in_progress"  # back to annotation, as a person's bad
        else:
            assert (mask.verification_state, mask.review_state) == ("unverified", "pending")
    auto_good = {pk for pk, s in scores.items() if s.applied and s.call == "accept"}
    assert auto_good and auto_good <= {m.pk for m in goods}  # it never accepts a shifted disc
    assert not {pk for pk, s in scores.items() if s.call == "accept"} & {m.pk for m in bads}
    # The review's quality figures stay people's: the verifier's own calls are not in them.
    of_version = Mask.objects.filter(model_version=engine.version, source_stage="automatic")
    (quality,) = review.quality(engine.project)
    assert quality["masks"] == of_version.count()
    assert quality["accepted"] == (
        of_version.filter(review_state="accepted").exclude(verification_state="auto_good").count()
    )
    assert quality["accepted"] < of_version.filter(review_state="accepted").count()

    # The page shows an auto-accepted mask as such; the annotator hears of an auto-rejection.
    shown = reviewer.get(engine.url("masks/"), {"verification_state": "auto_good"}).data
    assert {m["id"] for m in shown["results"]} == auto_good
    rejected = [pk for pk, s in scores.items() if s.applied and s.call == "reject"]
    assert rejected and set(rejected) <= {m.pk for m in bads}
    image_id = Mask.objects.get(pk=rejected[0]).image_id
    feedback = client_for(users["annotator"]).get(
        engine.url("verification/feedback/"), {"image": image_id}
    )
    (said_bad,) = feedback.data["rejected"]
    assert said_bad["mask"] == rejected[0] and said_bad["by"] == "verifier v1"

    # A person's verdict on a shown mask records what the verifier said of it.
    first = reviewer.get(engine.url("verification/next/")).data["mask"]
    assert first["id"] in people
    decision = verdict(reviewer, engine, Mask.objects.get(pk=first["id"]), "good", seconds=4)
    said = decision.data["snapshot"]["verifier"]
    assert said["number"] == 1 and said["call"] == scores[first["id"]].call
    assert said["audit"] == scores[first["id"]].audit

    # Masks that reach the queue later are scored when the page draws them.
    late = engine.image()
    fresh = [
        add_mask(late, p, engine.version) for p in good_masks(engine.seed) + bad_masks(engine.seed)
    ]
    shown_next = reviewer.get(engine.url("verification/next/"), {"image": late.pk})
    assert shown_next.status_code in (200, 204)
    late_scores = VerifierScore.objects.filter(verifier=version, mask__in=fresh)
    assert late_scores.count() == 4
    if shown_next.status_code == 200:
        assert shown_next.data["mask"]["id"] in queued(engine)

    summary = reviewer.get(engine.url("verifier/summary/")).data
    promoted = summary["promoted"]
    assert promoted["number"] == 1 and promoted["scored"] == len(before) + 4
    assert promoted["auto_accepted"] >= len(auto_good) and promoted["unscored"] == 0

    # The dashboard: per model version and per verifier version.
    board = client_for(users["annotator"]).get(engine.url("dashboard/")).data["verification"]
    (model_row,) = board["model_versions"]
    assert model_row["version"] == 0
    assert model_row["human_agreement"] == pytest.approx(25 / 49, abs=1e-4)
    assert model_row["by_people"] == 49 and model_row["auto_verified"] >= len(auto_good)
    v1, alone = board["verifiers"]
    assert (v1["verifier"], v1["state"], alone["verifier"]) == (1, "promoted", None)
    assert v1["by_people"] == 1 and v1["auto_verified"] >= len(auto_good)
    assert v1["auto_verified_share"] == pytest.approx(
        v1["auto_verified"] / (1 + v1["auto_verified"]), abs=1e-4
    )
    assert v1["seconds_per_verdict"] == 4.0 and v1["seconds_per_mask"] < 4.0
    assert alone["by_people"] == 48 and alone["seconds_per_mask"] == 2.0
    assert alone["masks_sent_back"] == 24 and alone["auto_verified"] == 0
    assert v1["held_out"]["filters_accepted_share"] == 0


@pytest.mark.django_db(transaction=True)
def test_bad_audits_demote_the_verifier_and_people_see_everything_again(
    engine: Engine, users: Any, client_for: Any, worker: Any
) -> None:
    reviewer, admin = client_for(users["reviewer"]), client_for(users["admin"])
    set_options(admin, engine, audit=0.5, audit_window=5)
    learnable(engine, reviewer)
    waiting = []
    for _ in range(30):  # one good mask per image: a bad verdict sends only its own image back
        image = engine.image()
        waiting.append(add_mask(image, good_masks(engine.seed)[0], engine.version))
    job, version = train(admin, engine)
    assert version is not None and version.state == "promoted", version.reason
    scores = {s.mask_id: s for s in VerifierScore.objects.filter(verifier=version)}
    auto_good = {pk for pk, s in scores.items() if s.applied and s.call == "accept"}
    audits = [pk for pk, s in scores.items() if s.audit and s.call == "accept"]
    assert auto_good and len(audits) >= 5

    # The reviewers disagree with every audited acceptance: after five, it is demoted.
    for n, pk in enumerate(audits[:5], start=1):
        assert VerifierVersion.objects.get(pk=version.pk).state == "promoted", n
        verdict(reviewer, engine, Mask.objects.get(pk=pk), "bad")
    version.refresh_from_db()
    assert version.state == "demoted" and version.ended_at is not None
    assert "people agreed with 0 of its last 5 audited calls (0.0%)" in version.reason
    assert f"{len(auto_good)} masks it had accepted alone went back to people" in version.reason
    assert version.figures["demotion"]["agreement"] == 0.0

    # Everything it accepted alone is back in the queue, as it was.
    for mask in Mask.objects.filter(pk__in=auto_good):
        assert (mask.verification_state, mask.review_state) == ("unverified", "pending")
    assert auto_good <= queued(engine)
    summary = reviewer.get(engine.url("verifier/summary/")).data
    assert summary["promoted"] is None
    listed = reviewer.get(engine.url("verifier/"), {"state": "demoted"}).data["results"]
    assert [v["number"] for v in listed] == [1]

    # New masks are not scored any more: people see them.
    late = engine.image()
    fresh = add_mask(late, good_masks(engine.seed)[0], engine.version)
    response = reviewer.get(engine.url("verification/next/"), {"image": late.pk})
    assert response.data["mask"]["id"] == fresh.pk
    assert not VerifierScore.objects.filter(mask=fresh).exists()
    assert admin.post(engine.url(f"verifier/{version.pk}/demote/")).status_code == 409

    board = admin.get(engine.url("dashboard/")).data["verification"]["verifiers"]
    assert board[0]["human_agreement"] == 0.0 and board[0]["audited"] == 5


@pytest.mark.django_db(transaction=True)
def test_an_admin_demotes_by_hand_and_a_retraining_cycle_trains_the_verifier(
    engine: Engine, users: Any, client_for: Any, worker: Any, settings: Any, tmp_path: Any
) -> None:
    from tests.annotator.test_retraining import TINY

    settings.MASKLOOP_TRAINING_DIR = tmp_path / "training"
    reviewer, admin = client_for(users["reviewer"]), client_for(users["admin"])
    learnable(engine, reviewer)
    assert verifiers.due(engine.project) == "48 mask verdicts and no verifier yet"
    cycle = admin.post(engine.url("retrain/"), {"params": TINY}, format="json")
    assert cycle.status_code == 202, cycle.data
    done = wait_for(cycle.data["id"], timeout=600)
    assert done.state == "succeeded", done.message
    trained = wait_for(done.result["verifier_job"], timeout=300)
    assert trained.kind == "train_verifier" and trained.state == "succeeded", trained.message
    assert trained.created_by == users["admin"]  # who launched the cycle
    version = VerifierVersion.objects.get(project=engine.project)
    assert version.job_id == trained.pk
    assert verifiers.due(engine.project) is None  # no new verdicts since

    assert version.state == "promoted", version.reason
    assert version.model_version == engine.project.promoted_version()  # the cycle's, if promoted

    response = admin.post(engine.url(f"verifier/{version.pk}/demote/"))
    assert response.status_code == 200, response.data
    assert response.data["state"] == "demoted"
    assert "demoted by admin" in response.data["reason"]
    assert reviewer.get(engine.url("verifier/summary/")).data["promoted"] is None


# --------------------------------------------------------------------------- exhaustivity


def test_the_image_check_ranks_images_by_the_uncovered_object_like_share(
    engine: Engine, users: Any, client_for: Any
) -> None:
    reviewer = client_for(users["reviewer"])
    left = np.zeros((H, W), dtype=bool)
    left[:, : W // 2] = True
    nearly = np.ones((H, W), dtype=bool)
    nearly[:7, :] = False

    covered = engine.image()  # 90% covered by a person's mask
    add_mask(covered, nearly, None, source_stage="assisted", predicted_iou=None)
    plain = engine.image()  # half covered, no model mask: the plain uncovered share
    add_mask(plain, left, None, source_stage="assisted", predicted_iou=None)
    seen = engine.image()  # half covered; the model saw an object in the other half
    add_mask(seen, left, None, source_stage="assisted", predicted_iou=None)
    right = np.zeros((H, W), dtype=bool)
    right[10:40, 60:90] = True
    add_mask(seen, right, engine.version, review_state="rejected", predicted_iou=0.9)

    scores = {i.pk: verification.exhaustivity_score(i) for i in (covered, plain, seen)}
    assert scores[plain.pk]["uncovered"] == 0.5 and scores[plain.pk]["object_like"] == 0
    assert scores[plain.pk]["score"] == pytest.approx(0.5 * 0.5)
    assert scores[seen.pk]["object_like"] == pytest.approx(900 / (W * H), abs=1e-4)
    assert scores[seen.pk]["score"] == pytest.approx(
        (0.5 * (W * H / 2 - 900) + 0.95 * 900) / (W * H)
    )
    assert scores[covered.pk]["score"] < scores[plain.pk]["score"] < scores[seen.pk]["score"]

    url = engine.url("verification/next/")
    order = []
    for _ in range(3):
        response = reviewer.get(url, {"kind": "exhaustivity", "exclude": ",".join(map(str, order))})
        assert response.status_code == 200
        order.append(response.data["image"]["id"])
    assert order == [seen.pk, plain.pk, covered.pk]
    # Checked and passed: the next one comes up.
    reviewer.post(
        engine.url("verification/"),
        {"kind": "exhaustivity", "image": seen.pk, "verdict": "yes"},
        format="json",
    )
    assert reviewer.get(url, {"kind": "exhaustivity"}).data["image"]["id"] == plain.pk


# --------------------------------------------------------------------------- who may do what


@dataclass
class VerifierWorld:
    world: World
    version: VerifierVersion
    other_version: VerifierVersion


def build_verifier_world(users: Any, project_factory: Any) -> VerifierWorld:
    w = build_world(users, project_factory)
    version = VerifierVersion.objects.create(
        project=w.project, number=1, state="promoted", target=0.94, threshold=0.9
    )
    other = VerifierVersion.objects.create(
        project=w.other, number=1, state="promoted", target=0.94, threshold=0.9
    )
    return VerifierWorld(w, version, other)


def tables() -> dict[str, list[dict[str, Any]]]:
    rows = snapshot()
    rows["VerifierVersion"] = list(VerifierVersion.objects.order_by("pk").values())
    rows["VerifierScore"] = list(VerifierScore.objects.order_by("pk").values())
    return rows


ENDPOINTS = [
    # name, method, url suffix, allowed roles, status for an allowed role
    ("list", "get", "verifier/", {"admin", "reviewer"}, 200),
    ("retrieve", "get", "verifier/{v}/", {"admin", "reviewer"}, 200),
    ("summary", "get", "verifier/summary/", {"admin", "reviewer"}, 200),
    ("train", "post", "verifier/train/", {"admin"}, 400),  # allowed; too few verdicts
    ("demote", "post", "verifier/{v}/demote/", {"admin"}, 200),
]


@pytest.mark.parametrize("role", ["admin", "annotator", "reviewer", "outsider"])
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e[0])
def test_role_matrix(
    endpoint: tuple[str, str, str, set[str], int],
    role: str,
    users: Any,
    project_factory: Any,
    client_for: Any,
) -> None:
    name, method, suffix, allowed, success = endpoint
    vw = build_verifier_world(users, project_factory)
    url = f"/api/projects/{vw.world.project.pk}/" + suffix.format(v=vw.version.pk)
    before = tables()
    response = getattr(client_for(users[role]), method)(url, format="json")
    expected = success if role in allowed else 404 if role == "outsider" else 403
    assert response.status_code == expected, (name, role, getattr(response, "data", None))
    if expected != 200 or method == "get":
        assert tables() == before, f"{name} as {role} changed the database"
    if name == "train" and expected == 400:
        assert "at least 40 mask verdicts" in response.data["detail"]


def test_another_projects_verifier_is_out_of_reach(
    users: Any, project_factory: Any, client_for: Any
) -> None:
    """The target project's admin cannot see or demote the other project's verifier through
    their own project, nor train or read the other project's."""
    vw = build_verifier_world(users, project_factory)
    admin = client_for(users["admin"])
    mine = f"/api/projects/{vw.world.project.pk}/verifier/"
    theirs = f"/api/projects/{vw.world.other.pk}/verifier/"
    before = tables()
    assert admin.get(f"{mine}{vw.other_version.pk}/").status_code == 404
    assert admin.post(f"{mine}{vw.other_version.pk}/demote/").status_code == 404
    for method, url in (
        ("get", theirs),
        ("get", f"{theirs}summary/"),
        ("post", f"{theirs}train/"),
        ("post", f"{theirs}{vw.other_version.pk}/demote/"),
    ):
        assert getattr(admin, method)(url).status_code == 404, url
    assert tables() == before
    assert [v["id"] for v in admin.get(mine).data["results"]] == [vw.version.pk]


def test_anonymous_gets_nothing(users: Any, project_factory: Any, client_for: Any) -> None:
    vw = build_verifier_world(users, project_factory)
    client = client_for(None)
    for _, method, suffix, _, _ in ENDPOINTS:
        url = f"/api/projects/{vw.world.project.pk}/" + suffix.format(v=vw.version.pk)
        assert getattr(client, method)(url).status_code in (401, 403), url
    assert VerifierVersion.objects.filter(state="promoted").count() == 2


def test_the_openapi_schema_lists_the_verifier_endpoints(users: Any, client_for: Any) -> None:
    paths = client_for(users["admin"]).get("/api/schema/?format=json").json()["paths"]
    for suffix in ("", "{id}/", "train/", "summary/", "{id}/demote/"):
        assert f"/api/projects/{{project_pk}}/verifier/{suffix}" in paths, suffix


def test_the_dashboard_page_has_the_verification_table(engine: Engine, users: Any) -> None:
    from django.test import Client

    browser = Client()
    browser.force_login(users["annotator"])
    html = browser.get(f"/projects/{engine.project.pk}/dashboard/").content.decode()
    assert 'id="verification-table"' in html and 'id="verification-rows"' in html

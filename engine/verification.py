"""Verification by people (SAM 2 / SAM 3 engines): after the masks of an image are made and
reviewed, a reviewer judges each mask of the semi-automatic and automatic stages good or bad
(mask verification), then checks the whole image for objects nobody masked (exhaustivity).

How it sits beside the review (engine/review.py). The review measures a model version: it
draws pending automatic masks at random and accepts, fixes or rejects them, and its figures
say how good the version's masks are. Verification is the later gate of the dataset: every
model-stage mask of an annotated image (or a fixed sample of them) gets one verdict, and every
annotated image one exhaustivity check. Both speak through ``Mask.review_state``, which is what
"the accepted set" means everywhere (retraining snapshots, exports filtered by review state,
re-runs of the automatic stage, which keep reviewed masks and never re-add them):

- good: ``verification_state = good``; a pending mask becomes ``accepted`` (a person judged
  it as it came), an accepted or fixed one stays so;
- bad: ``verification_state = bad`` and ``review_state = rejected``: out of the accepted set,
  nothing deleted; its image goes back to annotation (``in_progress``), where the page shows
  the mask as rejected;
- a mask already rejected in review is out of the set already and is not queued.

The image check comes after the masks: an ``annotated`` image waits while any of its masks is
still in the mask queue. "Yes" marks it complete (``Image.State.REVIEWED``); "no" stores the
places the reviewer clicked as hints and sends the image back to annotation.

Every decision is a ``VerificationDecision`` row: who, when, the seconds the page measured,
and a copy of the mask's (or image's) fields at that time.

The sample: ``project.settings["verification"]["sample"]`` (default 1, every mask). A mask is
in it when a fixed hash of its id (Knuth's multiplicative hash, ``sample_key``) falls below
the fraction, so the same mask is always in or out, and the database filters on it.
"""

from __future__ import annotations

import random
from typing import Any

from django.db import transaction
from django.db.models import Avg, BigIntegerField, Count, ExpressionWrapper, F, QuerySet

from annotator.models import Image, Mask, Project, VerificationDecision
from engine.errors import Conflict, InvalidInput
from engine.review import SOURCES

Kind = VerificationDecision.Kind
Verdict = VerificationDecision.Verdict

VERDICTS: dict[str, tuple[str, ...]] = {
    Kind.MASK: (Verdict.GOOD, Verdict.BAD),
    Kind.EXHAUSTIVITY: (Verdict.YES, Verdict.NO),
}
#: Images whose masks are checked: annotation is over for them (or they passed already).
READY = (Image.State.ANNOTATED, Image.State.REVIEWED)
#: Knuth's multiplicative hash: ``id * 2654435761 mod 2**32`` spreads consecutive ids over
#: [0, 2**32) (the golden ratio), so a fraction of them is an even sample of every image.
HASH_MULTIPLIER = 2_654_435_761
HASH_RANGE = 2**32
MAX_POINTS = 100


# --------------------------------------------------------------------------- the sample


def sample_fraction(project: Project) -> float:
    """The share of masks people verify, from ``settings["verification"]["sample"]``."""
    options = project.settings.get("verification") or {}
    if not isinstance(options, dict):
        raise InvalidInput('settings["verification"] must be an object, e.g. {"sample": 0.2}')
    value = options.get("sample", 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidInput(
            f'settings["verification"]["sample"] must be a number from 0 to 1, not {value!r}'
        )
    return float(value)


def sample_key(mask_id: int) -> int:
    """Where a mask falls in [0, 2**32): it is in a sample of fraction f when below f * 2**32."""
    return (mask_id * HASH_MULTIPLIER) % HASH_RANGE


def in_sample(mask_id: int, fraction: float) -> bool:
    return sample_key(mask_id) < round(fraction * HASH_RANGE)


def _sampled(masks: QuerySet[Mask], fraction: float) -> QuerySet[Mask]:
    threshold = round(fraction * HASH_RANGE)
    if threshold >= HASH_RANGE:
        return masks
    key = ExpressionWrapper(F("pk") * HASH_MULTIPLIER % HASH_RANGE, output_field=BigIntegerField())
    return masks.alias(sample_key=key).filter(sample_key__lt=threshold)


# --------------------------------------------------------------------------- the queues


def mask_queue(project: Project) -> QuerySet[Mask]:
    """Masks waiting for a verdict: of the semi-automatic or automatic stage, on an image
    whose annotation is over, not verified yet, not rejected already, in the sample."""
    masks = Mask.objects.filter(
        image__project=project,
        image__state__in=READY,
        source_stage__in=SOURCES,
        verification_state=Mask.VerificationState.UNVERIFIED,
    ).exclude(review_state=Mask.ReviewState.REJECTED)
    return _sampled(masks, sample_fraction(project))


def image_queue(project: Project) -> QuerySet[Image]:
    """Annotated images to check for missed objects: those none of whose masks still waits."""
    waiting = mask_queue(project).values("image_id")
    return Image.objects.filter(project=project, state=Image.State.ANNOTATED).exclude(
        pk__in=waiting
    )


def _draw(rows: QuerySet[Any], rng: random.Random | None) -> Any:
    """A row drawn at random, in two index lookups (as ``review.next_to_review`` draws)."""
    first = rows.order_by("pk").values_list("pk", flat=True).first()
    if first is None:
        return None
    last = rows.order_by("-pk").values_list("pk", flat=True).first()
    assert last is not None
    pivot = (rng or random).randint(first, last)
    found = rows.filter(pk__gte=pivot).order_by("pk").first()
    return found if found is not None else rows.order_by("pk").first()


def next_mask(
    project: Project,
    *,
    exclude: list[int] | None = None,
    image_id: int | None = None,
    rng: random.Random | None = None,
) -> Mask | None:
    """The next mask to verify: another of ``image_id`` while it has some (the reviewer keeps
    the image in view), else one drawn at random; ``exclude``: ids skipped in this sitting."""
    masks = mask_queue(project).select_related("image", "created_by", "updated_by")
    if exclude:
        masks = masks.exclude(pk__in=exclude)
    if image_id is not None:
        same = masks.filter(image_id=image_id).order_by("pk").first()
        if same is not None:
            return same
    return _draw(masks, rng)


def next_image(
    project: Project, *, exclude: list[int] | None = None, rng: random.Random | None = None
) -> Image | None:
    images = image_queue(project)
    if exclude:
        images = images.exclude(pk__in=exclude)
    return _draw(images, rng)


def kept_masks(image: Image) -> QuerySet[Mask]:
    """The image's masks in the accepted set (what the exhaustivity check looks at)."""
    return image.masks.exclude(review_state=Mask.ReviewState.REJECTED).order_by("pk")


# --------------------------------------------------------------------------- decisions


def mask_fields(mask: Mask) -> dict[str, Any]:
    """A copy of what the mask was when judged (also what a learned verifier needs)."""
    image = mask.image
    version = mask.model_version
    return {
        "id": mask.pk,
        "image": mask.image_id,
        "size": [image.height, image.width],
        "counts": mask.rle_counts,
        "original_counts": mask.original_rle_counts or None,
        "area": mask.area,
        "bbox": mask.bbox,
        "predicted_iou": mask.predicted_iou,
        "stability_score": mask.stability_score,
        "source_stage": mask.source_stage,
        "model_version": mask.model_version_id,
        "model_version_number": version.number if version is not None else None,
        "point_coords": mask.point_coords,
        "crop_box": mask.crop_box,
        "category": mask.category_id,
        "is_crowd": mask.is_crowd,
        "review_state": mask.review_state,
        "revision": mask.revision,
        "created_by": mask.created_by.get_username() if mask.created_by else None,
        "created_at": mask.created_at.isoformat(),
    }


def _check_verdict(kind: str, verdict: str) -> None:
    if kind not in VERDICTS:
        raise InvalidInput(f"kind must be one of {list(VERDICTS)}")
    if verdict not in VERDICTS[kind]:
        raise InvalidInput(f"a {kind} verdict must be one of {list(VERDICTS[kind])}")


def _check_seconds(seconds: float) -> float:
    if not 0 <= seconds <= 86_400:
        raise InvalidInput("seconds must be from 0 to 86400")
    return float(seconds)


@transaction.atomic
def verify_mask(
    project: Project,
    mask_id: int,
    verdict: str,
    *,
    user: Any,
    seconds: float = 0.0,
    note: str = "",
) -> VerificationDecision:
    """Record a good / bad verdict on a mask of the project (see the module's docstring for
    what each does). Nothing changes when it raises."""
    _check_verdict(Kind.MASK, verdict)
    seconds = _check_seconds(seconds)
    mask = (
        Mask.objects.select_for_update(of=("self",))
        .select_related("image", "model_version", "created_by")
        .filter(image__project=project, pk=mask_id)
        .first()
    )
    if mask is None:
        raise InvalidInput(f"mask {mask_id} is not a mask of this project")
    if mask.source_stage not in SOURCES:
        raise InvalidInput(
            f"mask {mask_id} was made in the {mask.source_stage} stage: only masks of the "
            "semi-automatic and automatic stages are verified"
        )
    if mask.verification_state != Mask.VerificationState.UNVERIFIED:
        raise Conflict(
            f"mask {mask_id} is already verified ({mask.verification_state})",
            verification_state=mask.verification_state,
        )
    if mask.review_state == Mask.ReviewState.REJECTED:
        raise Conflict(
            f"mask {mask_id} was rejected in review: it is not in the accepted set",
            review_state=mask.review_state,
        )
    snapshot = mask_fields(mask)
    if verdict == Verdict.GOOD:
        mask.verification_state = Mask.VerificationState.GOOD
        if mask.review_state == Mask.ReviewState.PENDING:
            mask.review_state = Mask.ReviewState.ACCEPTED
    else:
        mask.verification_state = Mask.VerificationState.BAD
        mask.review_state = Mask.ReviewState.REJECTED
        Image.objects.filter(pk=mask.image_id).update(state=Image.State.IN_PROGRESS)
    mask.revision += 1  # an editor holding the old revision must reload (DECISIONS 19)
    mask.updated_by = user
    mask.save(
        update_fields=[
            "verification_state",
            "review_state",
            "revision",
            "updated_by",
            "updated_at",
        ]
    )
    return VerificationDecision.objects.create(
        project=project,
        image_id=mask.image_id,
        mask=mask,
        kind=Kind.MASK,
        verdict=verdict,
        note=note,
        snapshot=snapshot,
        seconds=seconds,
        user=user,
    )


def _check_points(points: Any, image: Image, verdict: str) -> list[list[float]]:
    if not isinstance(points, list) or not all(
        isinstance(p, list | tuple)
        and len(p) == 2
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in p)
        for p in points
    ):
        raise InvalidInput("points must be a list of [x, y] pairs")
    if verdict == Verdict.YES and points:
        raise InvalidInput("points mark missed objects: a 'yes' takes none")
    if verdict == Verdict.NO and not points:
        raise InvalidInput("mark at least one place where an object was missed")
    if len(points) > MAX_POINTS:
        raise InvalidInput(f"at most {MAX_POINTS} points")
    for x, y in points:
        if not (0 <= x <= image.width and 0 <= y <= image.height):
            raise InvalidInput(
                f"point [{x}, {y}] lies outside the image ({image.width} x {image.height})"
            )
    return [[round(float(x), 1), round(float(y), 1)] for x, y in points]


@transaction.atomic
def check_image(
    project: Project,
    image_id: int,
    verdict: str,
    *,
    user: Any,
    points: Any = None,
    seconds: float = 0.0,
    note: str = "",
) -> VerificationDecision:
    """Record the exhaustivity check of an annotated image: "yes" marks it complete, "no"
    stores the places missed as hints and sends it back to annotation."""
    _check_verdict(Kind.EXHAUSTIVITY, verdict)
    seconds = _check_seconds(seconds)
    image = Image.objects.select_for_update().filter(project=project, pk=image_id).first()
    if image is None:
        raise InvalidInput(f"image {image_id} is not an image of this project")
    hints = _check_points([] if points is None else points, image, verdict)
    if image.state not in READY:
        raise Conflict(
            f"image {image_id} is {image.state}: it is checked once it is annotated",
            state=image.state,
        )
    kept = kept_masks(image)
    snapshot = {
        "image": image.pk,
        "size": [image.height, image.width],
        "state": image.state,
        "masks": kept.count(),
        "masks_by_stage": dict(
            kept.values_list("source_stage").annotate(n=Count("pk")).order_by("source_stage")
        ),
        "mask_ids": list(kept.values_list("pk", flat=True)),
    }
    image.state = Image.State.REVIEWED if verdict == Verdict.YES else Image.State.IN_PROGRESS
    image.save(update_fields=["state"])
    return VerificationDecision.objects.create(
        project=project,
        image=image,
        kind=Kind.EXHAUSTIVITY,
        verdict=verdict,
        points=hints,
        note=note,
        snapshot=snapshot,
        seconds=seconds,
        user=user,
    )


# --------------------------------------------------------------------------- read side


def feedback(image: Image) -> dict[str, Any]:
    """What the annotation page shows of the verification: the image's masks verified bad
    (who, when) and the places of the last failed exhaustivity check, while it stands."""
    bad = (
        VerificationDecision.objects.filter(
            image=image,
            kind=Kind.MASK,
            verdict=Verdict.BAD,
            mask__verification_state=Mask.VerificationState.BAD,
        )
        .select_related("user")
        .order_by("pk")
    )
    rejected = [
        {
            "mask": d.mask_id,
            "by": d.user.get_username() if d.user else None,
            "at": d.created_at,
            "note": d.note,
        }
        for d in bad
    ]
    last = (
        VerificationDecision.objects.filter(image=image, kind=Kind.EXHAUSTIVITY)
        .select_related("user")
        .order_by("-pk")
        .first()
    )
    hints = None
    if last is not None and last.verdict == Verdict.NO and image.state != Image.State.REVIEWED:
        hints = {
            "points": last.points,
            "note": last.note,
            "by": last.user.get_username() if last.user else None,
            "at": last.created_at,
        }
    return {"image": image.pk, "state": image.state, "rejected": rejected, "hints": hints}


def _mean(rows: QuerySet[VerificationDecision]) -> float | None:
    value = rows.aggregate(s=Avg("seconds"))["s"]
    return round(value, 2) if value is not None else None


def summary(project: Project) -> dict[str, Any]:
    """Counts and reviewer seconds, as the verify page and the dashboard show them."""
    fraction = sample_fraction(project)
    model_masks = Mask.objects.filter(image__project=project, source_stage__in=SOURCES)
    verified = dict(
        model_masks.values_list("verification_state")
        .annotate(n=Count("pk"))
        .order_by("verification_state")
    )
    decisions = VerificationDecision.objects.filter(project=project)
    ready = Image.objects.filter(project=project, state=Image.State.ANNOTATED).count()
    pending_images = image_queue(project).count()
    return {
        "sample": fraction,
        "masks": {
            "pending": mask_queue(project).count(),
            "good": verified.get(Mask.VerificationState.GOOD, 0),
            "bad": verified.get(Mask.VerificationState.BAD, 0),
            "seconds_per_mask": _mean(decisions.filter(kind=Kind.MASK)),
        },
        "images": {
            "pending": pending_images,
            # Annotated, but some of their masks still wait for a verdict.
            "waiting": ready - pending_images,
            "complete": Image.objects.filter(project=project, state=Image.State.REVIEWED).count(),
            "sent_back": decisions.filter(kind=Kind.EXHAUSTIVITY, verdict=Verdict.NO)
            .values("image_id")
            .distinct()
            .count(),
            "seconds_per_image": _mean(decisions.filter(kind=Kind.EXHAUSTIVITY)),
        },
        "decisions": decisions.count(),
    }

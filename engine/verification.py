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

A learned verifier (engine/verifiers.py, docs/verification.md) takes over part of the mask
check once one is promoted: every queued mask gets its score, a confident call outside the
audit sample (``in_audit``) decides the mask alone (``auto_good`` / ``auto_bad``), and people
see the rest. Scores are given by the verifier's training job to the whole queue when it is
promoted, and by ``next_mask`` to the masks that reached the queue since (those of the drawn
mask's image, before it is shown). A person's verdict on an audited mask measures the
verifier's agreement and may demote it (``verifiers.after_decision``).

The image check ranks the images (``exhaustivity_score``): the share of the image no kept
mask covers, weighted by how object-like the uncovered parts are, so that the images most
likely to hold missed objects are checked first.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Avg, BigIntegerField, Count, ExpressionWrapper, F, QuerySet

from annotator.models import (
    Image,
    Mask,
    Project,
    VerificationDecision,
    VerifierScore,
    VerifierVersion,
)
from engine import rle
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
#: The exhaustivity check ranks this many images of its queue (the oldest) per draw: ranking
#: decodes every mask of an image, so the whole queue would be too slow to rank per request.
RANK_WINDOW = 50
#: Weight of an uncovered pixel no model mask claims; one inside a model mask (an object the
#: model saw there) weighs between this and 1, by the mask's predicted IoU.
BACKGROUND_WEIGHT = 0.5
#: How many images ``next_mask`` scores with the verifier before it shows a mask anyway.
LAZY_SCORED_IMAGES = 10

#: ``settings["verification"]``: name -> (default, lowest, highest, whole number).
OPTIONS: dict[str, tuple[float, float, float, bool]] = {
    # The share of the model's masks people verify (a fixed hash sample).
    "sample": (1.0, 0.0, 1.0, False),
    # The precision the verifier's auto-accepted masks must reach (SA-1B's 94%, DECISIONS 14).
    "target": (0.94, 0.5, 0.999, False),
    # The share of the verifier's confident calls still shown to people, to measure it.
    "audit": (0.05, 0.0, 1.0, False),
    # How many of the latest audited decisions the agreement is measured on.
    "audit_window": (30, 5, 1000, True),
}


# --------------------------------------------------------------------------- settings


def check_settings(options: Any) -> dict[str, Any]:
    """``settings["verification"]`` checked: an object of known names with values in range
    (InvalidInput naming the bad one). The project serializer refuses a bad one on save."""
    if not isinstance(options, dict):
        raise InvalidInput('settings["verification"] must be an object, e.g. {"sample": 0.2}')
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidInput(
            f'unknown settings["verification"] names {unknown}; known: {sorted(OPTIONS)}'
        )
    for name in options:
        option(options, name)
    return options


def option(options: dict[str, Any], name: str) -> float:
    default, low, high, whole = OPTIONS[name]
    value = options.get(name, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not low <= value <= high
        or (whole and value != int(value))
    ):
        kind = "a whole number" if whole else "a number"
        raise InvalidInput(
            f'settings["verification"]["{name}"] must be {kind} from {low:g} to {high:g}, '
            f"not {value!r}",
            field=name,
        )
    return float(value)


def _options(project: Project) -> dict[str, Any]:
    options = project.settings.get("verification") or {}
    if not isinstance(options, dict):
        raise InvalidInput('settings["verification"] must be an object, e.g. {"sample": 0.2}')
    return options


def sample_fraction(project: Project) -> float:
    """The share of masks people verify, from ``settings["verification"]["sample"]``."""
    return option(_options(project), "sample")


def target_precision(project: Project) -> float:
    """The precision a verifier must reach, ``settings["verification"]["target"]``."""
    return option(_options(project), "target")


def audit_fraction(project: Project) -> float:
    """The share of a verifier's confident calls people still see, ``...["audit"]``."""
    return option(_options(project), "audit")


def audit_window(project: Project) -> int:
    """How many audited decisions the verifier's agreement is measured on."""
    return int(option(_options(project), "audit_window"))


# --------------------------------------------------------------------------- the sample


def sample_key(mask_id: int) -> int:
    """Where a mask falls in [0, 2**32): it is in a sample of fraction f when below f * 2**32."""
    return (mask_id * HASH_MULTIPLIER) % HASH_RANGE


def in_sample(mask_id: int, fraction: float) -> bool:
    return sample_key(mask_id) < round(fraction * HASH_RANGE)


def in_audit(mask_id: int, fraction: float) -> bool:
    """Whether a mask the verifier is confident about is still shown to people. A hash of
    its own, independent of ``sample_key``: with the same key, the audit would be the masks
    of lowest key, all inside the verification sample, and its share of it not ``fraction``."""
    digest = hashlib.blake2b(f"audit:{mask_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") < round(fraction * HASH_RANGE)


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


def _next_mask(
    project: Project, exclude: list[int] | None, image_id: int | None, rng: random.Random | None
) -> Mask | None:
    masks = mask_queue(project).select_related("image", "created_by", "updated_by")
    if exclude:
        masks = masks.exclude(pk__in=exclude)
    if image_id is not None:
        same = masks.filter(image_id=image_id).order_by("pk").first()
        if same is not None:
            return same
    return _draw(masks, rng)


def next_mask(
    project: Project,
    *,
    exclude: list[int] | None = None,
    image_id: int | None = None,
    rng: random.Random | None = None,
) -> Mask | None:
    """The next mask to verify: another of ``image_id`` while it has some (the reviewer keeps
    the image in view), else one drawn at random; ``exclude``: ids skipped in this sitting.

    With a promoted verifier, a drawn mask it has not scored yet (it reached the queue after
    the promotion) is scored first, with the other new masks of its image; when the verifier
    decides it alone, another is drawn. After ``LAZY_SCORED_IMAGES`` images the mask is shown
    as it is: a person's verdict is never wrong to ask for."""
    import engine.verifiers as verifiers

    verifier = verifiers.promoted(project)
    mask = _next_mask(project, exclude, image_id, rng)
    if verifier is None:
        return mask
    for _ in range(LAZY_SCORED_IMAGES):
        if mask is None or verifiers.scored(verifier, mask):
            return mask
        if not verifiers.score_image_safely(verifier, mask.image):
            return mask  # the verifier could not score it (logged): people see it
        if mask_queue(project).filter(pk=mask.pk).exists():
            return _reloaded(mask)  # still the people's: unsure, or in the audit
        mask = _next_mask(project, exclude, image_id, rng)
    return mask


def _reloaded(mask: Mask) -> Mask:
    return Mask.objects.select_related("image", "created_by", "updated_by").get(pk=mask.pk)


def next_image(
    project: Project, *, exclude: list[int] | None = None, rng: random.Random | None = None
) -> Image | None:
    """The image most likely to hold objects nobody masked, among the first ``RANK_WINDOW``
    of the queue (by ``exhaustivity_score``; ties to the older image). ``rng`` is unused: the
    order is the ranking."""
    images = image_queue(project)
    if exclude:
        images = images.exclude(pk__in=exclude)
    window = list(images.order_by("pk")[:RANK_WINDOW])
    if not window:
        return None
    return max(window, key=lambda image: (exhaustivity_score(image)["score"], -image.pk))


# --------------------------------------------------------------------------- exhaustivity rank

_scores_lock = threading.Lock()
_scores: OrderedDict[tuple[Any, ...], dict[str, float]] = OrderedDict()
_SCORES_KEPT = 4096


def exhaustivity_score(image: Image) -> dict[str, float]:
    """How likely the image is to hold objects nobody masked.

    ``uncovered``: the share of its pixels no kept mask covers. ``object_like``: the share of
    its pixels uncovered but inside one of the model's masks of it (automatic or semi-automatic,
    kept or not: a rejected one, or one of a low-threshold run, still marks a place where the
    model saw an object). ``score``: the uncovered pixels weighted, ``BACKGROUND_WEIGHT`` each,
    or up to 1 inside a model mask (by its predicted IoU), over all pixels. An image without
    model masks is ranked by its plain uncovered share (times ``BACKGROUND_WEIGHT``).

    Cached per process on the image's masks as they are (ids, revisions, review states)."""
    rows = list(
        Mask.objects.filter(image=image)
        .order_by("pk")
        .values_list(
            "pk", "revision", "review_state", "source_stage", "rle_counts", "predicted_iou"
        )
    )
    key = (image.pk, image.height, image.width, tuple((r[0], r[1], r[2]) for r in rows))
    with _scores_lock:
        cached = _scores.get(key)
        if cached is not None:
            _scores.move_to_end(key)
            return cached
    covered = np.zeros((image.height, image.width), dtype=bool)
    weight = np.full((image.height, image.width), BACKGROUND_WEIGHT, dtype=np.float32)
    candidates = 0
    for _, _, review_state, source, counts, predicted_iou in rows:
        pixels = rle.to_mask(rle.Rle(image.height, image.width, counts))
        if review_state != Mask.ReviewState.REJECTED:
            covered |= pixels
        if source in SOURCES:
            candidates += 1
            likeness = 0.5 if predicted_iou is None else min(max(predicted_iou, 0.0), 1.0)
            inside = BACKGROUND_WEIGHT + (1 - BACKGROUND_WEIGHT) * likeness
            np.maximum(weight, np.where(pixels, inside, 0).astype(np.float32), out=weight)
    total = float(image.height * image.width) or 1.0
    open_pixels = ~covered
    object_like = open_pixels & (weight > BACKGROUND_WEIGHT)
    result = {
        "uncovered": round(float(open_pixels.sum()) / total, 4),
        "object_like": round(float(object_like.sum()) / total, 4),
        "score": round(float(weight[open_pixels].sum()) / total, 6),
        "model_masks": float(candidates),
    }
    with _scores_lock:
        _scores[key] = result
        while len(_scores) > _SCORES_KEPT:
            _scores.popitem(last=False)
    return result


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
        "verifier": verifier_call(mask),
    }


def verifier_call(mask: Mask) -> dict[str, Any] | None:
    """What the promoted verifier said of the mask, if it scored it: kept with a person's
    verdict, it tells an audit (a confident call shown anyway) from an unsure mask, and the
    audits measure the verifier's agreement with people."""
    score = (
        VerifierScore.objects.filter(mask=mask, verifier__state=VerifierVersion.State.PROMOTED)
        .select_related("verifier")
        .first()
    )
    if score is None:
        return None
    return {
        "version": score.verifier_id,
        "number": score.verifier.number,
        "probability": round(score.probability, 4),
        "call": score.call,
        "audit": score.audit,
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
    decision = VerificationDecision.objects.create(
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
    if snapshot["verifier"] is not None:
        import engine.verifiers as verifiers

        verifiers.after_decision(decision)  # an audit: may demote the verifier
    return decision


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
    # Masks the learned verifier rejected alone: shown the same way, naming the verifier.
    auto = (
        VerifierScore.objects.filter(
            mask__image=image,
            call=VerifierScore.Call.REJECT,
            applied=True,
            mask__verification_state=Mask.VerificationState.AUTO_BAD,
        )
        .select_related("verifier")
        .order_by("pk")
    )
    rejected += [
        {
            "mask": score.mask_id,
            "by": f"verifier v{score.verifier.number}",
            "at": score.created_at,
            "note": f"P(good) = {score.probability:.2f}",
        }
        for score in auto
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

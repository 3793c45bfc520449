"""The learned verifier of a project (issue 14): trained on its reviewers' mask verdicts,
promoted only when it beats SA-1B's fixed filters at the project's target precision, then
deciding the masks it is sure of, audited by people, demoted when they disagree with it.

Training (a ``train_verifier`` job on the ``cpu`` queue, started by an admin or by a
retraining cycle once enough new decisions came in):

1. **Data.** The project's mask verdicts (``VerificationDecision`` of kind mask; the latest
   per mask), good = 1, bad = 0, each as judged: the mask's pixels and scores from the
   decision's snapshot, the image's pixels, and the image embedding of the model version that
   answers the project's clicks (computed and stored when missing; none under GrabCut).
   Features: ``model.verifier.mask_features``.
2. **Split by image**, deterministically: images in the order of their sha256, each to the
   held-out side while it holds less than ``HELD_OUT`` of the decisions, so that no image is
   on both sides and the split is the same for the same decisions.
3. **Fit** on the training side; **calibrate** on the held-out side: the accept threshold is
   the lowest probability whose held-out masks were good at least ``target`` of the time
   (``settings["verification"]["target"]``, default 0.94) with at least ``min_called`` of
   them; the reject threshold the same on the other side (masks it would reject were bad at
   least ``target`` of the time).
4. **Gate** (DECISIONS 13): on the same held-out masks, the share the verifier accepts at its
   threshold against the share the fixed filters (predicted IoU > 0.88 and stability >= 0.95)
   accept. Promoted only when the verifier reaches the target precision and accepts more;
   otherwise kept as rejected, its ``reason`` giving the figures.

Once promoted, every mask of the verification queue gets a ``VerifierScore``: accept, reject
or unsure. A confident call on a mask outside the audit sample (``verification.in_audit``,
``settings["verification"]["audit"]``, default 0.05) is applied at once: ``auto_good`` (a
pending mask becomes accepted, as a person's good makes it) or ``auto_bad`` (rejected, its
image back to annotation, as a person's bad). Unsure and audited masks stay in the queue for
people. When the verifier is promoted, its job scores the whole queue; masks that reach the
queue later are scored when the verify page draws them (``verification.next_mask``).

Audit: a person's verdict on an audited mask agrees when it matches the verifier's call. When
the agreement over the last ``audit_window`` audited verdicts (default 30) falls below the
verifier's target, it is demoted at once: the masks it accepted alone and no person has seen
go back to the queue, and people see everything again. Its rejections stand: their images
went back to annotation when it rejected them, and people redo those objects there.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Count, F, Max, Q
from django.utils import timezone

from annotator.models import (
    Image,
    Job,
    Mask,
    ModelVersion,
    Project,
    VerificationDecision,
    VerifierScore,
    VerifierVersion,
)
from engine import embeddings, jobs, predictors, rle
from engine import images as image_service
from engine.errors import Conflict, EngineError, InvalidInput
from engine.verification import (
    audit_fraction,
    audit_window,
    in_audit,
    mask_queue,
    target_precision,
)
from model.verifier import (
    ImageContext,
    Verifier,
    compare_with_filters,
    mask_features,
    sa1b_filters,
    threshold_for_precision,
)

logger = logging.getLogger(__name__)

KIND = "train_verifier"
JOB_KEY = "verifier"
#: Fewer decisions than this, or fewer good or bad ones than ``MIN_PER_VERDICT``, cannot
#: train and calibrate anything worth a gate.
MIN_DECISIONS = 40
MIN_PER_VERDICT = 5
#: A retraining cycle trains a new verifier once this many mask verdicts came in since the
#: last one was trained (the first one: once ``MIN_DECISIONS`` are there).
NEW_DECISIONS = 20
#: The held-out side's share of the decisions: the calibration needs as many as the fit
#: (a dozen weights).
HELD_OUT = 0.5
#: A threshold must be reached by at least this many held-out masks (or a tenth of them).
MIN_CALLED = 5
#: 0: logistic regression (what a few hundred decisions support).
HIDDEN = 0

State = VerifierVersion.State
Call = VerifierScore.Call


# --------------------------------------------------------------------------- reading


def promoted(project: Project) -> VerifierVersion | None:
    return VerifierVersion.objects.filter(project=project, state=State.PROMOTED).first()


def scored(version: VerifierVersion, mask: Mask) -> bool:
    return VerifierScore.objects.filter(verifier=version, mask=mask).exists()


def _latest_decisions(project: Project) -> list[tuple[int, int, str]]:
    """(decision id, image id, verdict) of the latest mask verdict per mask."""
    rows = (
        VerificationDecision.objects.filter(project=project, kind=VerificationDecision.Kind.MASK)
        .order_by("pk")
        .values_list("pk", "image_id", "verdict", "snapshot__id")
    )
    latest: dict[Any, tuple[int, int, str]] = {}
    for pk, image_id, verdict, mask_id in rows:
        latest[mask_id if mask_id is not None else f"decision{pk}"] = (pk, image_id, verdict)
    return sorted(latest.values())


def readiness(project: Project) -> dict[str, Any]:
    """The decisions a verifier would train on, how many came since the last one, and
    whether there are enough (``why`` says what is missing)."""
    latest = _latest_decisions(project)
    good = sum(1 for _, _, verdict in latest if verdict == VerificationDecision.Verdict.GOOD)
    bad = len(latest) - good
    images = len({image for _, image, _ in latest})
    last = (
        VerifierVersion.objects.filter(project=project).aggregate(n=Max("last_decision"))["n"] or 0
    )
    new = sum(1 for pk, _, _ in latest if pk > last)
    why = None
    if len(latest) < MIN_DECISIONS:
        why = (
            f"a verifier trains on at least {MIN_DECISIONS} mask verdicts; this project has "
            f"{len(latest)}"
        )
    elif min(good, bad) < MIN_PER_VERDICT:
        why = (
            f"a verifier needs at least {MIN_PER_VERDICT} good and {MIN_PER_VERDICT} bad "
            f"verdicts; this project has {good} good and {bad} bad"
        )
    elif images < 2:
        why = "the verdicts must be on at least 2 images (training and held-out images differ)"
    return {
        "decisions": len(latest),
        "good": good,
        "bad": bad,
        "images": images,
        "new": new,
        "ready": why is None,
        "why": why,
    }


def check_ready(project: Project) -> dict[str, Any]:
    figures = readiness(project)
    if not figures["ready"]:
        raise InvalidInput(
            str(figures["why"]), **{k: figures[k] for k in ("decisions", "good", "bad")}
        )
    return figures


# --------------------------------------------------------------------------- launching


def enqueue(project: Project, *, user: Any = None) -> Job:
    """Start a training job (400 with the counts when the decisions are too few; 409 while
    one is active). Nothing is created when it raises."""
    check_ready(project)
    target = target_precision(project)  # a bad setting: 400 now, not a failed job later
    return jobs.enqueue(project, KIND, key=JOB_KEY, params={"target": target}, user=user)


def due(project: Project) -> str | None:
    """Why a new verifier should be trained now, or None."""
    figures = readiness(project)
    if not figures["ready"]:
        return None
    if not VerifierVersion.objects.filter(project=project).exists():
        return f"{figures['decisions']} mask verdicts and no verifier yet"
    if figures["new"] >= NEW_DECISIONS:
        return f"{figures['new']} new mask verdicts since the last verifier"
    return None


def train_if_due(project: Project, *, user: Any = None) -> Job | None:
    """The retraining cycle's hook: train a verifier when enough new verdicts came in. Never
    raises (a cycle must not fail for it): a bad setting or a running job skips it."""
    try:
        reason = due(project)
        if reason is None:
            return None
        job = enqueue(project, user=user)
    except EngineError as exc:
        logger.info("no verifier training for project %s: %s", project.pk, exc)
        return None
    Job.objects.filter(pk=job.pk).update(message=f"after a retraining cycle: {reason}")
    return job


# --------------------------------------------------------------------------- features


def image_context(image: Image, version: ModelVersion | None) -> ImageContext:
    """What the features of the image's masks share: its edges and, with a model version,
    its embedding by that version (computed and stored when missing)."""
    rgb = image_service.read_rgb(image)
    if version is None or not version.checkpoint:
        return ImageContext.from_image(rgb)
    embedding = embeddings.stored_embedding(image, version)
    if embedding is None:
        embeddings.compute(image, version)
        embedding = embeddings.stored_embedding(image, version)
        if embedding is None:
            raise RuntimeError(f"the embedding of image {image.pk} could not be stored")
    sam = predictors.load_model(version)
    return ImageContext.from_image(
        rgb,
        embedding.embedding,
        input_size=tuple(embedding.input_size),
        image_size=sam.image_size,
    )


def _features(
    counts: str, height: int, width: int, context: ImageContext, iou: Any, stability: Any
) -> np.ndarray:
    pixels = rle.to_mask(rle.Rle(height, width, counts))
    return mask_features(pixels, context, predicted_iou=iou, stability_score=stability)


@dataclass
class Decided:
    decision: int
    image: int
    good: bool
    features: np.ndarray


def training_rows(
    project: Project,
    version: ModelVersion | None,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Decided]:
    """The features of every decided mask as it was judged, one image at a time."""
    latest = _latest_decisions(project)
    by_image: dict[int, list[int]] = {}
    for pk, image_id, _ in latest:
        by_image.setdefault(image_id, []).append(pk)
    rows: list[Decided] = []
    for done, (image_id, pks) in enumerate(sorted(by_image.items()), start=1):
        image = Image.objects.filter(pk=image_id).first()
        if image is not None:
            context = image_context(image, version)
            decisions = VerificationDecision.objects.filter(pk__in=pks).order_by("pk")
            for decision in decisions:
                snap = decision.snapshot
                height, width = snap.get("size") or (image.height, image.width)
                if (height, width) != (image.height, image.width):
                    logger.warning("decision %s: mask size differs from its image", decision.pk)
                    continue
                features = _features(
                    snap["counts"],
                    height,
                    width,
                    context,
                    snap.get("predicted_iou"),
                    snap.get("stability_score"),
                )
                good = decision.verdict == VerificationDecision.Verdict.GOOD
                rows.append(Decided(decision.pk, image_id, good, features))
        if on_progress is not None:
            on_progress(done, len(by_image))
    return rows


def held_out_images(rows: list[Decided]) -> set[int]:
    """Images in the order of their sha256 (their content: stable), each to the held-out
    side while that side holds less than ``HELD_OUT`` of the decisions assigned so far."""
    per_image = Counter(row.image for row in rows)
    shas = dict(Image.objects.filter(pk__in=list(per_image)).values_list("pk", "sha256"))
    held: set[int] = set()
    held_count = assigned = 0
    for image_id in sorted(per_image, key=lambda pk: (shas.get(pk, ""), pk)):
        if held_count <= HELD_OUT * assigned:
            held.add(image_id)
            held_count += per_image[image_id]
        assigned += per_image[image_id]
    return held


# --------------------------------------------------------------------------- fit and gate


def _reject_scores(probabilities: np.ndarray) -> np.ndarray:
    """P(bad), computed the same way at calibration and at scoring (float64), so that a mask
    on the threshold falls on the same side both times."""
    return 1.0 - np.asarray(probabilities, dtype=np.float64)


def calls(version: VerifierVersion, probabilities: np.ndarray) -> list[str]:
    """accept / reject / unsure for each probability, by the version's thresholds."""
    p = np.asarray(probabilities, dtype=np.float64)
    out: list[str] = []
    for value, bad in zip(p, _reject_scores(p), strict=True):
        if version.threshold is not None and value >= version.threshold:
            out.append(Call.ACCEPT)
        elif version.reject_threshold is not None and bad >= version.reject_threshold:
            out.append(Call.REJECT)
        else:
            out.append(Call.UNSURE)
    return out


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def fit_and_gate(
    project: Project,
    rows: list[Decided],
    *,
    target: float,
    model_version: ModelVersion | None,
    job: Job | None = None,
    user: Any = None,
) -> VerifierVersion:
    """Fit, calibrate, compare with the fixed filters, and record the version: promoted
    when it beats them at the target precision, else rejected with the reason."""
    held = held_out_images(rows)
    train = [r for r in rows if r.image not in held]
    test = [r for r in rows if r.image in held]
    x_train = np.stack([r.features for r in train]) if train else np.zeros((0, 0))
    y_train = np.array([r.good for r in train], dtype=bool)
    x_test = np.stack([r.features for r in test]) if test else np.zeros((0, 0))
    y_test = np.array([r.good for r in test], dtype=bool)
    if len(set(y_train.tolist())) < 2 or len(test) < MIN_CALLED:
        raise InvalidInput(
            f"the split by image left {len(train)} training decisions "
            f"({int(y_train.sum())} good) and {len(test)} held out: both sides need good and "
            "bad verdicts; verify masks on more images"
        )
    verifier = Verifier(hidden=HIDDEN).fit(x_train, y_train)
    min_called = max(MIN_CALLED, len(test) // 10)
    calibration = verifier.calibrate(x_test, y_test, target=target, min_accepted=min_called)
    probabilities = verifier.probabilities(x_test)
    reject_at = threshold_for_precision(
        _reject_scores(probabilities), ~y_test, target, min_accepted=min_called
    )
    comparison = compare_with_filters(verifier, x_test, y_test)
    rejected = (
        _reject_scores(probabilities) >= reject_at
        if reject_at is not None
        else np.zeros(len(test), dtype=bool)
    )
    accepted = probabilities >= verifier.threshold
    rejected &= ~accepted
    filters = sa1b_filters(x_test[:, 0], x_test[:, 1])
    figures = {
        "target": target,
        "decisions": len(rows),
        "train": {
            "decisions": len(train),
            "images": len({r.image for r in train}),
            "good": int(y_train.sum()),
            "bad": int((~y_train).sum()),
        },
        "held_out": {
            "decisions": len(test),
            "images": len(held),
            "good": int(y_test.sum()),
            "bad": int((~y_test).sum()),
        },
        "min_called": min_called,
        "calibration": calibration,
        "comparison": comparison,
        "verifier": {
            "accepted": int(accepted.sum()),
            "accepted_share": _share(int(accepted.sum()), len(test)),
            "precision": comparison["verifier"]["precision"],
            "rejected": int(rejected.sum()),
            "rejected_share": _share(int(rejected.sum()), len(test)),
            # Share of the masks it rejects that people rejected.
            "reject_precision": round(float((~y_test[rejected]).mean()), 4)
            if rejected.any()
            else None,
            "unsure_share": _share(int((~accepted & ~rejected).sum()), len(test)),
        },
        "filters": {
            "accepted": int(filters.sum()),
            "accepted_share": comparison["filters"]["accepted_share"],
            "precision": comparison["filters"]["precision"],
        },
    }
    better = bool(comparison["better"])
    reason = _gate_reason(figures, better)
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        number = (
            VerifierVersion.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0
        ) + 1
        version = VerifierVersion.objects.create(
            project=project,
            number=number,
            state=State.CANDIDATE,
            reason=reason,
            verifier=verifier.to_dict(),
            target=target,
            threshold=calibration["threshold"],
            reject_threshold=None if reject_at is None else float(reject_at),
            figures=figures,
            model_version=model_version,
            last_decision=max(r.decision for r in rows),
            job=job,
            created_by=user if getattr(user, "pk", None) else None,
        )
        if better:
            _promote(version)
        else:
            version.state = State.REJECTED
            version.save(update_fields=["state"])
    return version


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _gate_reason(figures: dict[str, Any], better: bool) -> str:
    held = figures["held_out"]["decisions"]
    mine, fixed = figures["verifier"], figures["filters"]
    target = _percent(figures["target"])
    threshold = figures["calibration"]["threshold"]
    filters = (
        f"the fixed SA-1B filters accept {_percent(fixed['accepted_share'])} "
        f"at precision {_percent(fixed['precision'])}"
    )
    if threshold is None:
        return (
            f"rejected: no threshold reaches precision {target} with at least "
            f"{figures['min_called']} of the {held} held-out masks accepted; {filters}"
        )
    said = (
        f"at threshold {threshold:.3f} it accepts {_percent(mine['accepted_share'])} of the "
        f"{held} held-out masks at precision {_percent(mine['precision'])} (target {target}); "
        f"{filters}"
    )
    if better:
        return f"promoted: {said}"
    return f"rejected: it does not accept more than the filters: {said}"


@transaction.atomic
def _promote(version: VerifierVersion) -> None:
    now = timezone.now()
    for old in VerifierVersion.objects.select_for_update().filter(
        project_id=version.project_id, state=State.PROMOTED
    ):
        old.state = State.RETIRED
        old.ended_at = now
        old.reason = f"{old.reason}\nretired: replaced by v{version.number}".strip()
        old.save(update_fields=["state", "ended_at", "reason"])
    version.state = State.PROMOTED
    version.promoted_at = now
    version.save(update_fields=["state", "promoted_at"])


# --------------------------------------------------------------------------- the job


@jobs.runner(KIND)
def _train(context: jobs.JobContext) -> dict[str, Any]:
    job = context.job
    project = job.project
    check_ready(project)  # the verdicts may have changed since the launch
    target = float(job.params.get("target") or target_precision(project))
    model_version = predictors.answering_version(project)
    context.progress(0.0, "features of the verified masks")

    def progress(done: int, total: int) -> None:
        context.progress(0.7 * done / max(total, 1), f"features: {done}/{total} images")

    rows = training_rows(project, model_version, on_progress=progress)
    if context.cancelled():
        return {"cancelled_at": "features"}
    version = fit_and_gate(
        project, rows, target=target, model_version=model_version, job=job, user=job.created_by
    )
    result: dict[str, Any] = {
        "version": version.number,
        "state": version.state,
        "reason": version.reason,
        "figures": version.figures,
    }
    if version.state == State.PROMOTED:
        context.progress(0.75, "scoring the verification queue")

        def scoring(done: int, total: int) -> None:
            context.progress(
                0.75 + 0.25 * done / max(total, 1), f"scored {done}/{total} images of the queue"
            )

        result["scored"] = score_queue(version, on_progress=scoring, cancelled=context.cancelled)
    return result


# --------------------------------------------------------------------------- scoring


def score_queue(
    version: VerifierVersion,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, int]:
    """Score every queued mask the version has not scored, image by image; counts by what
    happened (accepted, rejected, unsure, audit)."""
    pending = mask_queue(version.project).exclude(verifier_scores__verifier=version)
    image_ids = sorted(set(pending.values_list("image_id", flat=True)))
    totals: Counter[str] = Counter()
    for done, image_id in enumerate(image_ids, start=1):
        if cancelled is not None and cancelled():
            break
        image = Image.objects.filter(pk=image_id).first()
        if image is not None:
            totals.update(score_image(version, image))
        if on_progress is not None:
            on_progress(done, len(image_ids))
    return dict(totals)


def score_image(version: VerifierVersion, image: Image) -> Counter[str]:
    """Score the image's queued masks the version has not scored; apply its confident calls
    outside the audit sample."""
    masks = list(
        mask_queue(version.project)
        .filter(image=image)
        .exclude(verifier_scores__verifier=version)
        .order_by("pk")
    )
    if not masks:
        return Counter()
    verifier = Verifier.from_dict(version.verifier)
    context = image_context(image, version.model_version)
    features = np.stack(
        [
            _features(
                m.rle_counts,
                image.height,
                image.width,
                context,
                m.predicted_iou,
                m.stability_score,
            )
            for m in masks
        ]
    )
    probabilities = verifier.probabilities(features).astype(np.float64)
    audit = audit_fraction(version.project)
    outcome: Counter[str] = Counter()
    for mask, probability, call in zip(
        masks, probabilities, calls(version, probabilities), strict=True
    ):
        outcome[_record(version, mask.pk, float(probability), call, audit)] += 1
    return outcome


def score_image_safely(version: VerifierVersion, image: Image) -> bool:
    """``score_image`` for the web request: False (and logged) when it cannot score, so
    that the page shows the masks to people instead of failing."""
    try:
        score_image(version, image)
    except Exception:
        logger.exception("verifier v%s could not score image %s", version.number, image.pk)
        return False
    return True


@transaction.atomic
def _record(
    version: VerifierVersion, mask_id: int, probability: float, call: str, audit_share: float
) -> str:
    """Store one score and apply it; what happened: accepted, rejected, unsure, audit, or
    skipped (a person or another scorer got there first, or the version left promotion)."""
    if not VerifierVersion.objects.filter(pk=version.pk, state=State.PROMOTED).exists():
        return "skipped"
    mask = (
        Mask.objects.select_for_update()
        .filter(pk=mask_id, verification_state=Mask.VerificationState.UNVERIFIED)
        .exclude(review_state=Mask.ReviewState.REJECTED)
        .first()
    )
    if mask is None or VerifierScore.objects.filter(verifier=version, mask=mask).exists():
        return "skipped"
    audit = call != Call.UNSURE and in_audit(mask.pk, audit_share)
    score = VerifierScore(
        verifier=version, mask=mask, probability=probability, call=call, audit=audit
    )
    if call == Call.UNSURE or audit:
        score.save()
        return "audit" if audit else "unsure"
    score.applied = True
    score.previous_review_state = mask.review_state
    if call == Call.ACCEPT:
        mask.verification_state = Mask.VerificationState.AUTO_GOOD
        if mask.review_state == Mask.ReviewState.PENDING:
            mask.review_state = Mask.ReviewState.ACCEPTED
    else:
        mask.verification_state = Mask.VerificationState.AUTO_BAD
        mask.review_state = Mask.ReviewState.REJECTED
        Image.objects.filter(pk=mask.image_id).update(state=Image.State.IN_PROGRESS)
    mask.revision += 1  # an editor holding the old revision must reload (DECISIONS 19)
    mask.save(update_fields=["verification_state", "review_state", "revision", "updated_at"])
    score.save()
    return "accepted" if call == Call.ACCEPT else "rejected"


# --------------------------------------------------------------------------- audit


def _audited(version: VerifierVersion) -> Any:
    """People's verdicts on masks the version called confidently but left to them."""
    return VerificationDecision.objects.filter(
        project_id=version.project_id,
        kind=VerificationDecision.Kind.MASK,
        snapshot__verifier__version=version.pk,
        snapshot__verifier__audit=True,
    )


def agreement(version: VerifierVersion, window: int | None = None) -> dict[str, Any]:
    """How often people's audited verdicts matched the version's call (the latest
    ``window`` of them, or all)."""
    rows = _audited(version).order_by("-pk").values_list("verdict", "snapshot__verifier__call")
    if window is not None:
        rows = rows[:window]
    pairs = list(rows)
    agreed = sum(
        1
        for verdict, call in pairs
        if (verdict == VerificationDecision.Verdict.GOOD) == (call == Call.ACCEPT)
    )
    return {
        "decisions": len(pairs),
        "agreed": agreed,
        "agreement": round(agreed / len(pairs), 4) if pairs else None,
    }


def after_decision(decision: VerificationDecision) -> VerifierVersion | None:
    """After a person's verdict on an audited mask: demote the verifier when its agreement
    over the last ``audit_window`` audited verdicts fell below its target. Returns the
    demoted version, else None."""
    info = decision.snapshot.get("verifier") or {}
    version_id = info.get("version")
    if not info.get("audit") or not isinstance(version_id, int):
        return None
    version = VerifierVersion.objects.filter(pk=version_id, state=State.PROMOTED).first()
    if version is None:
        return None
    window = audit_window(version.project)
    figures = agreement(version, window)
    if figures["decisions"] < window or figures["agreement"] >= version.target:
        return None
    return demote(
        version,
        reason=(
            f"demoted: people agreed with {figures['agreed']} of its last {window} audited "
            f"calls ({_percent(figures['agreement'])}), below its target "
            f"{_percent(version.target)}"
        ),
        figures=figures,
    )


@transaction.atomic
def demote(
    version: VerifierVersion, *, reason: str, figures: dict[str, Any] | None = None
) -> VerifierVersion:
    """Stop the promoted version deciding: people see every queued mask again, and the
    masks it accepted alone that no person has seen go back to the queue."""
    locked = VerifierVersion.objects.select_for_update().get(pk=version.pk)
    if locked.state != State.PROMOTED:
        raise Conflict(
            f"verifier v{locked.number} is {locked.state}: only the promoted one can be demoted",
            state=locked.state,
        )
    applied = VerifierScore.objects.filter(
        verifier=locked,
        call=Call.ACCEPT,
        applied=True,
        mask__verification_state=Mask.VerificationState.AUTO_GOOD,
    )
    back = list(applied.values_list("mask_id", "previous_review_state"))
    ids = [mask_id for mask_id, _ in back]
    was_pending = [m for m, previous in back if previous == Mask.ReviewState.PENDING]
    # It made them accepted; a person's later change of review state (a fix) stays.
    Mask.objects.filter(pk__in=was_pending, review_state=Mask.ReviewState.ACCEPTED).update(
        review_state=Mask.ReviewState.PENDING
    )
    Mask.objects.filter(pk__in=ids).update(
        verification_state=Mask.VerificationState.UNVERIFIED, revision=F("revision") + 1
    )
    locked.state = State.DEMOTED
    locked.ended_at = timezone.now()
    returned = f"{len(ids)} masks it had accepted alone went back to people"
    locked.reason = f"{locked.reason}\n{reason}; {returned}".strip()
    locked.figures = {
        **locked.figures,
        "demotion": {**(figures or {}), "returned_to_people": len(ids)},
    }
    locked.save(update_fields=["state", "ended_at", "reason", "figures"])
    return locked


# --------------------------------------------------------------------------- the figures


def summary(project: Project) -> dict[str, Any]:
    """The verifier's state for the API: settings, what training would use, and the
    promoted version's calls and audit agreement."""
    version = promoted(project)
    out: dict[str, Any] = {
        "settings": {
            "target": target_precision(project),
            "audit": audit_fraction(project),
            "audit_window": audit_window(project),
        },
        "training": {
            **readiness(project),
            "minimum": MIN_DECISIONS,
            "new_for_retraining": NEW_DECISIONS,
        },
        "versions": VerifierVersion.objects.filter(project=project).count(),
        "promoted": None,
    }
    if version is None:
        return out
    counts = dict(
        VerifierScore.objects.filter(verifier=version)
        .values_list("call")
        .annotate(n=Count("pk"))
        .order_by("call")
    )
    applied = VerifierScore.objects.filter(verifier=version, applied=True)
    out["promoted"] = {
        "id": version.pk,
        "number": version.number,
        "target": version.target,
        "threshold": version.threshold,
        "reject_threshold": version.reject_threshold,
        "promoted_at": version.promoted_at,
        "scored": sum(counts.values()),
        "calls": {call: counts.get(call, 0) for call in Call.values},
        "auto_accepted": applied.filter(call=Call.ACCEPT).count(),
        "auto_rejected": applied.filter(call=Call.REJECT).count(),
        "audit": VerifierScore.objects.filter(verifier=version, audit=True).count(),
        "agreement": agreement(version, audit_window(project)),
        "agreement_all": agreement(version),
        "unscored": mask_queue(project).exclude(verifier_scores__verifier=version).count(),
    }
    return out


def windows(project: Project) -> list[tuple[VerifierVersion, Q]]:
    """Each version that was promoted, with the filter of the decisions taken while it was."""
    out = []
    for version in VerifierVersion.objects.filter(project=project, promoted_at__isnull=False):
        during = Q(created_at__gte=version.promoted_at)
        if version.ended_at is not None:
            during &= Q(created_at__lt=version.ended_at)
        out.append((version, during))
    return out

"""The figures of a project's dashboard: is the data engine working?

- Per day and stage: masks made, images touched, masks per image; seconds and clicks per
  mask of the masks people made (from the masks' own timing, which the annotation page fills
  from its prompt log).
- Per model version: the interactive-protocol figures of its retraining cycle (or of the
  shipped card for version 0), and the review agreement of its automatic masks.
- The running and recent jobs.
- The verification (issue 14), per model version and per learned-verifier version: human
  agreement, the share of masks the verifier decided alone, reviewer seconds per mask and per
  image, masks sent back, images complete.

All of it is a handful of grouped queries, cheap enough to compute on each request.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Avg, Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

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
from engine import review, verifiers
from engine.stages import automatic

PEOPLE_STAGES = ("assisted", "semi")
RECENT_JOBS = 20


def daily(project: Project) -> list[dict[str, Any]]:
    """One row per (day, source stage): masks, images, masks per image, seconds and clicks
    per mask (people's masks only: a model's mask has no annotation time)."""
    rows = (
        Mask.objects.filter(image__project=project)
        .annotate(day=TruncDate("created_at"))
        .values("day", "source_stage")
        .annotate(
            masks=Count("id"),
            images=Count("image", distinct=True),
            seconds=Sum("seconds_spent"),
            clicks=Sum("clicks"),
            timed=Count("id", filter=Q(seconds_spent__gt=0)),
        )
        .order_by("day", "source_stage")
    )
    out = []
    for row in rows:
        person = row["source_stage"] in PEOPLE_STAGES and row["timed"]
        out.append(
            {
                "day": row["day"].isoformat(),
                "stage": row["source_stage"],
                "masks": row["masks"],
                "images": row["images"],
                "masks_per_image": round(row["masks"] / row["images"], 2),
                "seconds_per_mask": round(row["seconds"] / row["timed"], 1) if person else None,
                "clicks_per_mask": round(row["clicks"] / row["timed"], 2) if person else None,
            }
        )
    return out


def per_stage(project: Project) -> list[dict[str, Any]]:
    """Totals per source stage (the paper's table: masks per image, time per mask)."""
    rows = (
        Mask.objects.filter(image__project=project)
        .values("source_stage")
        .annotate(
            masks=Count("id"),
            images=Count("image", distinct=True),
            seconds=Avg("seconds_spent", filter=Q(seconds_spent__gt=0)),
            clicks=Avg("clicks", filter=Q(seconds_spent__gt=0)),
        )
        .order_by("source_stage")
    )
    return [
        {
            "stage": r["source_stage"],
            "masks": r["masks"],
            "images": r["images"],
            "masks_per_image": round(r["masks"] / r["images"], 2),
            "seconds_per_mask": round(r["seconds"], 1) if r["seconds"] is not None else None,
            "clicks_per_mask": round(r["clicks"], 2) if r["clicks"] is not None else None,
        }
        for r in rows
    ]


def versions(project: Project) -> list[dict[str, Any]]:
    """Per model version: state, parent, the cycle's figures (candidate and the version it
    was compared with), and its automatic masks' review agreement."""
    agreement = {row["version"]: row for row in review.quality(project)}
    out = []
    for version in ModelVersion.objects.filter(project=project).order_by("number"):
        cycle = (version.metrics or {}).get("cycle") or {}
        out.append(
            {
                "version": version.number,
                "state": version.state,
                "parent": version.parent.number if version.parent else None,
                "config": version.config.get("name"),
                # What its cycle trained: full, decoder or hq (None: not made by a cycle).
                "mode": (version.metrics or {}).get("mode") if cycle else None,
                "created_at": version.created_at.isoformat(),
                "figures": cycle.get("candidate"),
                # Version 0, the shipped starter: its card's held-out figures, per set.
                "shipped_figures": None if cycle else (version.metrics or None),
                "compared_with": cycle.get("baseline_name"),
                "baseline_figures": cycle.get("baseline"),
                "gain": cycle.get("gain"),
                "interval": cycle.get("interval"),
                "metric": cycle.get("metric"),
                "review": agreement.get(version.number),
            }
        )
    return out


def jobs(project: Project) -> list[dict[str, Any]]:
    """Running jobs first, then the most recent ones."""
    rows = project.jobs.annotate(
        active=Count("id", filter=Q(state__in=Job.ACTIVE_STATES))
    ).order_by(F("active").desc(), "-created_at")[:RECENT_JOBS]
    return [
        {
            "id": j.pk,
            "kind": j.kind,
            "state": j.state,
            "progress": j.progress,
            "message": j.message,
            "created_at": j.created_at.isoformat(),
            "finished_at": j.finished_at.isoformat() if j.finished_at else None,
        }
        for j in rows
    ]


# --------------------------------------------------------------------------- verification

MASK = VerificationDecision.Kind.MASK
EXHAUSTIVITY = VerificationDecision.Kind.EXHAUSTIVITY
Verdict = VerificationDecision.Verdict
States = Mask.VerificationState


def _ratio(part: float | None, whole: float | None, digits: int = 4) -> float | None:
    return round(part / whole, digits) if part is not None and whole else None


def _verification_row(
    verdicts: QuerySet[VerificationDecision],
    checks: QuerySet[VerificationDecision],
    *,
    auto_good: int,
    auto_bad: int,
    images_complete: int,
) -> dict[str, Any]:
    """The figures shared by both tables. ``verdicts``: people's mask verdicts counted;
    ``checks``: their image checks. Seconds per mask are people's seconds over every mask
    verified, by people or by the verifier: the review time a mask costs, which a verifier
    lowers; seconds per verdict is the time of one person's verdict."""
    people = verdicts.aggregate(
        n=Count("pk"), good=Count("pk", filter=Q(verdict=Verdict.GOOD)), seconds=Sum("seconds")
    )
    auto = auto_good + auto_bad
    verified = people["n"] + auto
    return {
        "masks_verified": verified,
        "by_people": people["n"],
        "auto_verified": auto,
        "auto_verified_share": _ratio(auto, verified),
        "seconds_per_mask": _ratio(people["seconds"] or 0.0, verified, 2),
        "seconds_per_verdict": _ratio(people["seconds"], people["n"], 2),
        "seconds_per_image": _ratio(
            checks.aggregate(s=Sum("seconds"))["s"], checks.count() or None, 2
        ),
        "masks_sent_back": people["n"] - people["good"] + auto_bad,
        "images_complete": images_complete,
    }


def verification_by_model_version(project: Project) -> list[dict[str, Any]]:
    """Per model version with masks of the semi-automatic or automatic stage: how people
    judged them (human agreement: the share of their verdicts that were good) and how much
    of their checking the verifier did."""
    decisions = VerificationDecision.objects.filter(project=project)
    out = []
    for version in ModelVersion.objects.filter(project=project).order_by("number"):
        own = Mask.objects.filter(model_version=version, source_stage__in=review.SOURCES)
        if not own.exists():
            continue
        states = dict(own.values_list("verification_state").annotate(n=Count("pk")).order_by())
        image_ids = own.values("image_id")
        verdicts = decisions.filter(kind=MASK, snapshot__model_version=version.pk)
        judged = verdicts.aggregate(n=Count("pk"), good=Count("pk", filter=Q(verdict="good")))
        row = _verification_row(
            verdicts,
            decisions.filter(kind=EXHAUSTIVITY, image_id__in=image_ids),
            auto_good=states.get(States.AUTO_GOOD, 0),
            auto_bad=states.get(States.AUTO_BAD, 0),
            images_complete=Image.objects.filter(
                pk__in=image_ids, state=Image.State.REVIEWED
            ).count(),
        )
        out.append(
            {
                "version": version.number,
                "state": version.state,
                "masks": sum(states.values()),
                "human_agreement": _ratio(judged["good"], judged["n"]),
                **row,
            }
        )
    return out


def verification_by_verifier(project: Project) -> list[dict[str, Any]]:
    """Per learned-verifier version, over the time it was promoted: its held-out figures, the
    audit agreement (human agreement: the share of people's audited verdicts that matched its
    call), and the checking it took over. Last, "people only": the verdicts taken while no
    verifier was promoted."""
    decisions = VerificationDecision.objects.filter(project=project)
    spans = dict((version.pk, during) for version, during in verifiers.windows(project))
    out = []
    for version in VerifierVersion.objects.filter(project=project).order_by("number"):
        figures = version.figures or {}
        row: dict[str, Any] = {
            "verifier": version.number,
            "state": version.state,
            "reason": version.reason,
            "held_out": {
                "precision": (figures.get("verifier") or {}).get("precision"),
                "accepted_share": (figures.get("verifier") or {}).get("accepted_share"),
                "filters_accepted_share": (figures.get("filters") or {}).get("accepted_share"),
                "filters_precision": (figures.get("filters") or {}).get("precision"),
            },
        }
        during = spans.get(version.pk)
        if during is not None:
            applied = VerifierScore.objects.filter(verifier=version, applied=True)
            audit = verifiers.agreement(version)
            row["human_agreement"] = audit["agreement"]
            row["audited"] = audit["decisions"]
            row.update(
                _verification_row(
                    decisions.filter(during, kind=MASK),
                    decisions.filter(during, kind=EXHAUSTIVITY),
                    auto_good=applied.filter(call=VerifierScore.Call.ACCEPT).count(),
                    auto_bad=applied.filter(call=VerifierScore.Call.REJECT).count(),
                    images_complete=decisions.filter(
                        during, kind=EXHAUSTIVITY, verdict=Verdict.YES
                    ).count(),
                )
            )
        out.append(row)
    alone = Q()
    for during in spans.values():
        alone &= ~during
    people = decisions.filter(alone)
    if people.exists() or out:
        out.append(
            {
                "verifier": None,
                "state": "people only",
                "human_agreement": None,
                "audited": 0,
                **_verification_row(
                    people.filter(kind=MASK),
                    people.filter(kind=EXHAUSTIVITY),
                    auto_good=0,
                    auto_bad=0,
                    images_complete=people.filter(kind=EXHAUSTIVITY, verdict=Verdict.YES).count(),
                ),
            }
        )
    return out


def dashboard(project: Project) -> dict[str, Any]:
    return {
        "stage": project.stage,
        "per_stage": per_stage(project),
        "daily": daily(project),
        "versions": versions(project),
        "automatic": automatic.summary(project),
        "jobs": jobs(project),
        "verification": {
            "model_versions": verification_by_model_version(project),
            "verifiers": verification_by_verifier(project),
        },
    }

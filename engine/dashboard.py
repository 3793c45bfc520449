"""The figures of a project's dashboard: is the data engine working?

- Per day and stage: masks made, images touched, masks per image; seconds and clicks per
  mask of the masks people made (from the masks' own timing, which the annotation page fills
  from its prompt log).
- Per model version: the interactive-protocol figures of its retraining cycle (or of the
  shipped card for version 0), and the review agreement of its automatic masks.
- The running and recent jobs.

All of it is a handful of grouped queries, cheap enough to compute on each request.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Avg, Count, F, Q, Sum
from django.db.models.functions import TruncDate

from annotator.models import Job, Mask, ModelVersion, Project
from engine import review
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


def dashboard(project: Project) -> dict[str, Any]:
    return {
        "stage": project.stage,
        "per_stage": per_stage(project),
        "daily": daily(project),
        "versions": versions(project),
        "automatic": automatic.summary(project),
        "jobs": jobs(project),
    }

"""Reviewing model-made masks: sampling what to review next, and the quality figures.

The paper checked its automatic masks by having people fix a sample: 94% of them had an IoU
above 0.90 with the corrected mask, 97% above 0.75. ``quality`` gives those shares per model
version from the reviews done here: an accepted mask counts IoU 1, a fixed one the IoU between
the model's original (kept on the first change, ``Mask.original_rle_counts``) and the final
mask; rejected masks are counted apart.
"""

from __future__ import annotations

import random
from typing import Any

from django.db.models import QuerySet

from annotator.models import Mask, MaskSource, Project
from engine import rle
from engine.errors import InvalidInput

REVIEWED = (Mask.ReviewState.ACCEPTED, Mask.ReviewState.FIXED, Mask.ReviewState.REJECTED)
SOURCES = (MaskSource.AUTOMATIC, MaskSource.SEMI)


def _to_review(project: Project, version_id: int | None, source: str) -> QuerySet[Mask]:
    if source not in SOURCES:
        raise InvalidInput(f"source must be one of {list(SOURCES)}")
    masks = Mask.objects.filter(
        image__project=project, source_stage=source, review_state=Mask.ReviewState.PENDING
    )
    if version_id is not None:
        masks = masks.filter(model_version_id=version_id)
    return masks


def next_to_review(
    project: Project,
    *,
    version_id: int | None = None,
    source: str = MaskSource.AUTOMATIC,
    exclude: list[int] | None = None,
    rng: random.Random | None = None,
) -> Mask | None:
    """A pending mask drawn at random (a fair sample for the quality figures), or None.

    Drawn by a random id in the range and the first pending mask from there on (wrapping),
    which needs two index lookups however many masks there are, unlike ORDER BY random().
    ``exclude``: ids the reviewer skipped in this sitting.
    """
    masks = _to_review(project, version_id, source)
    if exclude:
        masks = masks.exclude(pk__in=exclude)
    first = masks.order_by("pk").values_list("pk", flat=True).first()
    if first is None:
        return None
    last = masks.order_by("-pk").values_list("pk", flat=True).first()
    assert last is not None
    pivot = (rng or random).randint(first, last)
    found = masks.filter(pk__gte=pivot).order_by("pk").first()
    return found if found is not None else masks.order_by("pk").first()


def pending_count(
    project: Project, *, version_id: int | None = None, source: str = MaskSource.AUTOMATIC
) -> int:
    """How many model-made masks still wait for a review."""
    return _to_review(project, version_id, source).count()


def quality(project: Project, *, source: str = MaskSource.AUTOMATIC) -> list[dict[str, Any]]:
    """Per model version: masks made, reviewed, accepted / fixed / rejected, and the shares of
    kept reviewed masks whose IoU before vs after correction is above 0.90 and 0.75."""
    if source not in SOURCES:
        raise InvalidInput(f"source must be one of {list(SOURCES)}")
    masks = Mask.objects.filter(image__project=project, source_stage=source)
    # A mask the learned verifier decided alone was judged by no person: an auto-accepted one
    # counted as IoU 1 would make the version look as good as the verifier's own threshold
    # (engine/verifiers.py). The figures are people's.
    judged = masks.exclude(
        verification_state__in=[Mask.VerificationState.AUTO_GOOD, Mask.VerificationState.AUTO_BAD]
    )
    out = []
    numbers = (
        masks.exclude(model_version=None)
        .values_list("model_version_id", "model_version__number")
        .distinct()
        .order_by("model_version__number")
    )
    for version_id, number in numbers:
        of_version = judged.filter(model_version_id=version_id)
        counts = {state: of_version.filter(review_state=state).count() for state in REVIEWED}
        reviewed = sum(counts.values())
        ious = [1.0] * counts[Mask.ReviewState.ACCEPTED]
        fixed = of_version.filter(review_state=Mask.ReviewState.FIXED).values_list(
            "rle_counts", "original_rle_counts", "image__height", "image__width"
        )
        for counts_now, counts_before, height, width in fixed.iterator(chunk_size=500):
            if not counts_before:  # marked fixed without a change of pixels
                ious.append(1.0)
                continue
            now = rle.to_mask(rle.Rle(height, width, counts_now))
            before = rle.to_mask(rle.Rle(height, width, counts_before))
            ious.append(rle.mask_iou(before, now))
        kept = len(ious)
        out.append(
            {
                "version": number,
                "masks": masks.filter(model_version_id=version_id).count(),
                "reviewed": reviewed,
                "accepted": counts[Mask.ReviewState.ACCEPTED],
                "fixed": counts[Mask.ReviewState.FIXED],
                "rejected": counts[Mask.ReviewState.REJECTED],
                "share_iou_above_0_90": round(sum(i > 0.9 for i in ious) / kept, 4)
                if kept
                else None,
                "share_iou_above_0_75": round(sum(i > 0.75 for i in ious) / kept, 4)
                if kept
                else None,
                "share_rejected": round(counts[Mask.ReviewState.REJECTED] / reviewed, 4)
                if reviewed
                else None,
            }
        )
    return out

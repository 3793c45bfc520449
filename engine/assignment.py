"""Handing out images to annotators: the next image that needs work, leased to one person
at a time. A lease lasts LEASE minutes and is renewed while the annotation page is open."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotator.models import Image, Project

LEASE = timedelta(minutes=10)
NEEDS_WORK = (Image.State.NEW, Image.State.IN_PROGRESS)


def _free_for(user: Any) -> Q:
    now = timezone.now()
    return Q(assigned_to__isnull=True) | Q(assigned_until__lt=now) | Q(assigned_to=user)


@transaction.atomic
def next_image(project: Project, user: Any, *, after: int | None = None) -> Image | None:
    """Lease the next image that needs work and that nobody else holds. The user's own held
    image comes first (a reload does not skip it) unless ``after`` asks to move past it."""
    candidates = Image.objects.select_for_update(skip_locked=True).filter(
        project=project, state__in=NEEDS_WORK
    )
    mine = candidates.filter(assigned_to=user, assigned_until__gte=timezone.now())
    if after is not None:
        mine = mine.exclude(pk=after)
        candidates = candidates.exclude(pk=after)
    image = mine.order_by("id").first()
    free = candidates.filter(_free_for(user))
    # Untouched images first, then the ones left half done; in upload order from ``after``.
    for state in NEEDS_WORK:
        if image is not None:
            break
        in_state = free.filter(state=state).order_by("id")
        image = in_state.filter(pk__gt=after or 0).first() or in_state.first()
    if image is None:
        return None
    release(project, user, keep=image.pk)
    image.assigned_to = user
    image.assigned_until = timezone.now() + LEASE
    image.save(update_fields=["assigned_to", "assigned_until"])
    return image


def renew(image: Image, user: Any) -> bool:
    """Extend the user's lease; False when someone else holds the image now."""
    return bool(
        Image.objects.filter(pk=image.pk)
        .filter(_free_for(user))
        .update(assigned_to=user, assigned_until=timezone.now() + LEASE)
    )


def give_back(image: Image, user: Any) -> None:
    """End the user's lease on the image (another user's lease stays)."""
    Image.objects.filter(pk=image.pk, assigned_to=user).update(
        assigned_to=None, assigned_until=None
    )


def release(project: Project, user: Any, *, keep: int | None = None) -> None:
    Image.objects.filter(project=project, assigned_to=user).exclude(pk=keep or 0).update(
        assigned_to=None, assigned_until=None
    )


def held_by_other(image: Image, user: Any) -> bool:
    return (
        image.assigned_to_id is not None
        and image.assigned_to_id != getattr(user, "pk", None)
        and image.assigned_until is not None
        and image.assigned_until >= timezone.now()
    )

"""The model-version registry of a project: promotion, rejection, rollback."""

from __future__ import annotations

from django.db import transaction

from annotator.models import ModelVersion
from engine.errors import Conflict


@transaction.atomic
def promote(version: ModelVersion) -> ModelVersion:
    """Make ``version`` the one that answers clicks; the previous one is retired (and can be
    promoted again: that is a rollback)."""
    locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if locked.state == ModelVersion.State.PROMOTED:
        return locked
    if locked.state == ModelVersion.State.REJECTED:
        raise Conflict(f"v{locked.number} was rejected; it cannot be promoted")
    ModelVersion.objects.filter(
        project_id=locked.project_id, state=ModelVersion.State.PROMOTED
    ).update(state=ModelVersion.State.RETIRED)
    locked.state = ModelVersion.State.PROMOTED
    locked.save(update_fields=["state"])
    return locked


@transaction.atomic
def reject(version: ModelVersion) -> ModelVersion:
    locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if locked.state == ModelVersion.State.PROMOTED:
        raise Conflict(f"v{locked.number} is promoted; promote another version first")
    locked.state = ModelVersion.State.REJECTED
    locked.save(update_fields=["state"])
    return locked

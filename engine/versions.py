"""The model-version registry of a project: promotion, rejection, rollback."""

from __future__ import annotations

import hashlib
from pathlib import Path

from django.core.files import File
from django.db import transaction
from django.db.models import Max

from annotator.models import ModelVersion, Project
from engine.errors import Conflict, InvalidInput


def add_checkpoint(
    project: Project, path: Path, *, config_name: str = "", notes: str = ""
) -> ModelVersion:
    """A new candidate version from a checkpoint file, refused unless it loads strictly into
    its configuration (ours name theirs inside; official files need ``config_name``)."""
    from model.build import available, build_sam
    from model.checkpoints import CheckpointError, read_checkpoint

    try:
        payload = read_checkpoint(path)
    except (CheckpointError, OSError) as exc:
        raise InvalidInput(f"{path.name} is not a readable checkpoint: {exc}") from None
    name = config_name or payload.get("config", {}).get("name", "")
    if name not in available():
        raise InvalidInput(
            f"unknown configuration {name!r} for {path.name}; give one of {', '.join(available())}"
        )
    try:
        build_sam(name, checkpoint=path)
    except (CheckpointError, ValueError) as exc:
        raise InvalidInput(f"{path.name} does not fit {name}: {exc}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with transaction.atomic():
        number = (project.model_versions.aggregate(top=Max("number"))["top"] or 0) + 1
        if not project.model_versions.exists():
            number = 0
        version = ModelVersion(
            project=project,
            number=number,
            config={**payload.get("config", {}), "name": name},
            checkpoint_sha256=digest,
            parent=project.promoted_version(),
            notes=notes,
        )
        with path.open("rb") as handle:
            version.checkpoint.save(f"project{project.pk}-v{number}.pth", File(handle), save=False)
        version.save()
    return version


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

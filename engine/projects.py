"""Actions on projects: each one a transaction, called by the API, the CLI and the admin."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.db import transaction

from annotator.models import Image, Job, Mask, Membership, ModelVersion, Project, PromptLog, Role
from engine.errors import InvalidInput
from engine.stages import automatic


@transaction.atomic
def create_project(
    name: str,
    *,
    owner: Any,
    description: str = "",
    categories: list[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> Project:
    """A new project; its creator becomes its admin. Its version 0 is the starter model, whose
    calibrated automatic-stage thresholds fill ``settings["automatic"]`` unless given."""
    project = Project.objects.create(
        name=name,
        description=description,
        settings=dict(settings or {}),
        created_by=owner if owner is not None else None,
    )
    if owner is not None:
        Membership.objects.create(project=project, user=owner, role=Role.ADMIN)
    for category in categories or []:
        project.categories.create(name=category)
    from engine.starter import add_starter_version

    add_starter_version(project, user=owner)
    return project


def role_of(user: Any, project: Project) -> str | None:
    """The user's role in the project; superusers act as admins everywhere."""
    if not getattr(user, "is_authenticated", False):
        return None
    if getattr(user, "is_superuser", False):
        return Role.ADMIN
    membership = Membership.objects.filter(project=project, user=user).first()
    return membership.role if membership else None


@transaction.atomic
def remove_member(membership: Membership) -> None:
    """Remove a member, but never the project's last admin (it would be orphaned)."""
    if membership.role == Role.ADMIN and not (
        Membership.objects.filter(project=membership.project, role=Role.ADMIN)
        .exclude(pk=membership.pk)
        .exists()
    ):
        raise InvalidInput("a project must keep at least one admin")
    membership.delete()


@transaction.atomic
def change_role(membership: Membership, role: str) -> Membership:
    if role not in Role.values:
        raise InvalidInput(f"unknown role {role!r}")
    if membership.role == Role.ADMIN and role != Role.ADMIN:
        others = Membership.objects.filter(project=membership.project, role=Role.ADMIN).exclude(
            pk=membership.pk
        )
        if not others.exists():
            raise InvalidInput("a project must keep at least one admin")
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


def deletion_counts(images: Any) -> dict[str, int]:
    """What deleting these images removes (DECISIONS 17)."""
    image_ids = list(images.values_list("pk", flat=True))
    files = sum(
        1 + (1 if original else 0)
        for original in Image.objects.filter(pk__in=image_ids).values_list("original", flat=True)
    )
    return {
        "images": len(image_ids),
        "masks": Mask.objects.filter(image_id__in=image_ids).count(),
        "prompt_logs": PromptLog.objects.filter(image_id__in=image_ids).count(),
        "files": files,
    }


def delete_images(images: Any) -> dict[str, int]:
    """Delete images with their masks, logs and files; return how many of each."""
    counts = deletion_counts(images)
    file_names = [
        (image.file.storage, name)
        for image in images
        for name in (image.file.name, image.original.name)
        if name
    ]
    with transaction.atomic():
        images.delete()

        def remove_files() -> None:
            for storage, name in file_names:
                storage.delete(name)

        transaction.on_commit(remove_files)
    return counts


def delete_project(project: Project) -> dict[str, int]:
    counts = delete_images(project.images.all())
    from engine.starter import is_shared

    version_files = [
        v.checkpoint
        for v in project.model_versions.all()
        if v.checkpoint and not is_shared(v.checkpoint.name)
    ]
    counts["model_versions"] = project.model_versions.count()
    counts["jobs"] = project.jobs.count()
    export_files = [e.file for e in project.exports.all() if e.file]
    counts["exports"] = project.exports.count()
    version_files += export_files
    counts["files"] += len(version_files)
    with transaction.atomic():
        project.delete()

        def remove_files() -> None:
            for field in version_files:
                if field.name:
                    field.storage.delete(field.name)

        transaction.on_commit(remove_files)
    return counts


def summary(project: Project) -> dict[str, Any]:
    """Counts shown on the project page."""
    states = Counter(project.images.values_list("state", flat=True))
    return {
        "images": sum(states.values()),
        "images_by_state": dict(states),
        "masks": Mask.objects.filter(image__project=project).count(),
        "active_jobs": project.jobs.filter(state__in=Job.ACTIVE_STATES).count(),
        "model_versions": ModelVersion.objects.filter(project=project).count(),
        "automatic": automatic.summary(project),
    }

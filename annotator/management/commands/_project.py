"""Shared argument handling for the project commands."""

from __future__ import annotations

from django.core.management.base import CommandError

from annotator.models import Project


def find_project(ref: str) -> Project:
    """A project by id or by exact name."""
    query = (
        Project.objects.filter(pk=int(ref)) if ref.isdigit() else Project.objects.filter(name=ref)
    )
    matches = list(query[:2])
    if not matches:
        raise CommandError(f"no project {ref!r}")
    if len(matches) > 1:
        raise CommandError(f"several projects are named {ref!r}; use the id")
    return matches[0]

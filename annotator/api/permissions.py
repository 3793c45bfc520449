"""Who may do what, in one table: resource x view action -> the roles allowed.

A user who is not a member of a project does not see it at all (404, never 403, so that a
project's existence does not leak); a member whose role does not allow an action gets 403.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission

from annotator.models import Role

ADMIN = frozenset({Role.ADMIN})
EDITORS = frozenset({Role.ADMIN, Role.ANNOTATOR, Role.REVIEWER})
REVIEWERS = frozenset({Role.ADMIN, Role.REVIEWER})
MEMBERS = EDITORS

READ = {"list": MEMBERS, "retrieve": MEMBERS}

PERMISSIONS: dict[str, dict[str, frozenset[str]]] = {
    "project": {
        **READ,
        "summary": MEMBERS,
        "dashboard": MEMBERS,
        "embeddings": ADMIN,
        "automatic": ADMIN,
        "retrain": ADMIN,
        "update": ADMIN,
        "partial_update": ADMIN,
        "destroy": ADMIN,
    },
    "member": {**READ, "create": ADMIN, "update": ADMIN, "partial_update": ADMIN, "destroy": ADMIN},
    "category": {
        **READ,
        "create": ADMIN,
        "update": ADMIN,
        "partial_update": ADMIN,
        "destroy": ADMIN,
    },
    "image": {
        **READ,
        "file": MEMBERS,
        "predict": MEMBERS,
        "next": EDITORS,
        "lease": EDITORS,
        "create": ADMIN,
        "partial_update": MEMBERS,
        "destroy": ADMIN,
        "import_folder": ADMIN,
    },
    "mask": {
        **READ,
        "create": EDITORS,
        "update": EDITORS,
        "partial_update": EDITORS,
        "destroy": frozenset({Role.ADMIN, Role.ANNOTATOR}),
    },
    "prompt_log": {**READ, "create": EDITORS},
    "job": {**READ, "cancel": ADMIN},
    "model_version": {**READ, "download": MEMBERS, "promote": ADMIN, "reject": ADMIN},
    # Exports hold the whole dataset: admins make and delete them; admins and reviewers (who
    # check the data) list and download them; annotators do not.
    "export": {
        "list": REVIEWERS,
        "retrieve": REVIEWERS,
        "download": REVIEWERS,
        "create": ADMIN,
        "destroy": ADMIN,
    },
    "import": {"create": ADMIN},
    "review": {"next": REVIEWERS, "quality": REVIEWERS},
    # Verification by people: the reviewers of the review page. Annotators read what it
    # sent back to them (the rejected masks and the hints of an image).
    "verification": {
        "list": REVIEWERS,
        "create": REVIEWERS,
        "next": REVIEWERS,
        "summary": REVIEWERS,
        "feedback": MEMBERS,
    },
    # The learned verifier: reviewers read its versions and figures; admins train it and
    # demote it by hand (it is promoted only by its gate, demoted also by its audit).
    "verifier": {
        "list": REVIEWERS,
        "retrieve": REVIEWERS,
        "summary": REVIEWERS,
        "train": ADMIN,
        "demote": ADMIN,
    },
}

# Fields only some roles may change, checked in addition to the action.
REVIEW_STATE_ROLES = REVIEWERS


def allowed(resource: str, action: str | None, role: str | None) -> bool:
    if role is None or action is None:
        return False
    return role in PERMISSIONS[resource].get(action, frozenset())


class ProjectRolePermission(BasePermission):
    """Uses the view's ``resource`` and its ``project_role()``."""

    message = "Your role in this project does not allow this action."

    def has_permission(self, request: Any, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if view.resource == "project" and view.action in ("list", "create"):
            return True
        return allowed(view.resource, view.action, view.project_role())

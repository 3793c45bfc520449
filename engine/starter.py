"""Version 0 of every new project: the starter model shipped inside the package.

The checkpoint is stored once in the media storage under a name derived from its sha256 and
shared by every project's version 0 (never copied per project, never deleted with one).
Where no starter checkpoint is present, a project starts with no version and GrabCut answers.
When the card records automatic-stage thresholds calibrated for the model, a new project
starts with them as its ``settings["automatic"]``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from annotator.models import ModelVersion, Project

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "model" / "weights"
SHARED_PREFIX = "checkpoints/shared/"


def starter_paths() -> tuple[Path, Path] | None:
    """(checkpoint, card) of the starter model, or None when there is none to use."""
    configured = settings.MASKLOOP_STARTER_CHECKPOINT
    if configured == "none":
        return None
    checkpoint = Path(configured) if configured else SHIPPED_DIR / "starter.pth"
    card = checkpoint.with_suffix(".json")
    if not checkpoint.is_file() or not card.is_file():
        return None
    return checkpoint, card


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def add_starter_version(project: Project, *, user: Any = None) -> ModelVersion | None:
    """Give the project its version 0 (promoted) from the starter model, if there is one."""
    paths = starter_paths()
    if paths is None or project.model_versions.exists():
        return None
    checkpoint, card_path = paths
    card = json.loads(card_path.read_text())
    sha = card.get("sha256") or _sha256(checkpoint)
    name = f"{SHARED_PREFIX}starter-{sha[:16]}.pth"
    if not default_storage.exists(name):
        with checkpoint.open("rb") as handle:
            stored = default_storage.save(name, File(handle))
        if stored != name:  # a concurrent first save won; keep one copy
            default_storage.delete(stored)
    version = ModelVersion(
        project=project,
        number=0,
        state=ModelVersion.State.PROMOTED,
        config=card.get("config", {}),
        metrics=card.get("metrics", {}),
        checkpoint_sha256=sha,
        notes=card.get("description", "the starter model shipped with Maskloop"),
        created_by=user if getattr(user, "pk", None) else None,
    )
    version.checkpoint.name = name
    version.save()
    thresholds = (card.get("automatic") or {}).get("thresholds")
    if thresholds and "automatic" not in project.settings:
        # Calibrated for this model (model.amg.calibrate): at the paper's thresholds it keeps
        # nothing (DECISIONS 12a). The project's own, visible and editable.
        project.settings = {**project.settings, "automatic": dict(thresholds)}
        project.save(update_fields=["settings"])
    return version


def is_shared(name: str | None) -> bool:
    """Files that belong to no single project (kept when a project is deleted)."""
    return bool(name) and str(name).startswith(SHARED_PREFIX)

"""Which predictor answers a project's clicks: its promoted model version, or GrabCut when no
version with a checkpoint is promoted yet (so a new project works from its first minute)."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Any

from annotator.models import ModelVersion, Project
from engine.errors import EngineError
from model.grabcut import GrabCutPredictor
from model.types import InteractivePredictor

GRABCUT = "grabcut"


class ModelUnavailable(EngineError):
    """The promoted version cannot be loaded; an admin must promote another one."""

    status_code = 503
    code = "model_unavailable"


_MODELS_KEPT = 3

_lock = threading.Lock()
_models: OrderedDict[tuple[int, str], Any] = OrderedDict()


def version_key(version: ModelVersion | None) -> str:
    """A stable name for what answers: ``v<id>`` or ``grabcut``."""
    return f"v{version.pk}" if version is not None and version.checkpoint else GRABCUT


def answering_version(project: Project) -> ModelVersion | None:
    """The promoted version when it has a checkpoint, else None (GrabCut answers)."""
    version = project.promoted_version()
    return version if version is not None and version.checkpoint else None


def load_model(version: ModelVersion) -> Any:
    """The version's Sam, loaded once per process (a few are kept, least recently used out)."""
    from model.build import build_sam

    # Everything that tells two versions apart, even one whose primary key SQLite reused.
    identity = (
        f"{version.created_at}:{version.config.get('name')}:{version.checkpoint.name}:"
        f"{version.checkpoint_sha256}"
    )
    key = (version.pk, identity)
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
    name = version.config.get("name")
    if not name:
        raise ModelUnavailable(f"model version {version.number} has no configuration name")
    try:
        with version.checkpoint.open("rb") as handle:
            sam = build_sam(name, checkpoint=io.BytesIO(handle.read()))  # type: ignore[arg-type]
    except (KeyError, ValueError, OSError) as exc:
        raise ModelUnavailable(f"model version {version.number} cannot be loaded: {exc}") from None
    with _lock:
        _models[key] = sam
        while len(_models) > _MODELS_KEPT:
            _models.popitem(last=False)
    return sam


def make_predictor(version: ModelVersion | None) -> InteractivePredictor:
    """A fresh predictor (it holds one image's state) for the version."""
    if version is None or not version.checkpoint:
        return GrabCutPredictor()
    import torch
    from django.conf import settings

    from model.predictor import SamPredictor

    if torch.get_num_threads() != settings.MASKLOOP_TORCH_THREADS:
        torch.set_num_threads(settings.MASKLOOP_TORCH_THREADS)

    return SamPredictor(load_model(version))

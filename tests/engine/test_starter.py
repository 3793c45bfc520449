"""Every new project starts with the starter model as its promoted version 0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from annotator.models import ModelVersion
from engine.projects import create_project, delete_project
from engine.starter import SHARED_PREFIX
from tests.annotator.fixtures import tiny_checkpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def starter(tmp_path: Path, settings: Any) -> Path:
    checkpoint = tmp_path / "starter.pth"
    checkpoint.write_bytes(tiny_checkpoint())
    card = {
        "config": {"name": "vit_tiny_test"},
        "metrics": {"davis345": {"noc85": 9.9}},
        "sha256": "ab" * 32,
    }
    checkpoint.with_suffix(".json").write_text(json.dumps(card))
    settings.MASKLOOP_STARTER_CHECKPOINT = str(checkpoint)
    return checkpoint


def test_new_projects_get_version_0_promoted_and_share_its_file(
    starter: Path, users: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    first = create_project("one", owner=users["admin"])
    second = create_project("two", owner=users["admin"])
    v0 = first.promoted_version()
    assert v0 is not None and v0.number == 0 and v0.config == {"name": "vit_tiny_test"}
    assert v0.metrics["davis345"]["noc85"] == 9.9
    other = second.promoted_version()
    assert other is not None and other.checkpoint.name == v0.checkpoint.name
    assert v0.checkpoint.name.startswith(SHARED_PREFIX)
    stored = list((Path(settings.MEDIA_ROOT) / SHARED_PREFIX).iterdir())
    assert len(stored) == 1 and stored[0].read_bytes() == starter.read_bytes()
    with django_capture_on_commit_callbacks(execute=True):
        delete_project(first)
    assert stored[0].exists()  # still version 0 of the other project
    assert ModelVersion.objects.filter(project=second).count() == 1


def test_version_0_answers_clicks(starter: Path, users: Any, client_for: Any) -> None:
    from engine import images
    from tests.conftest import png_bytes

    project = create_project("p", owner=users["admin"])
    image = images.store(project, images.prepare(png_bytes(40, 30), "a.png"))
    answer = client_for(users["admin"]).post(
        f"/api/projects/{project.pk}/images/{image.pk}/predict/",
        {"points": [[20, 15]], "labels": [1]},
        format="json",
    )
    assert answer.status_code == 200
    assert answer.data["model"] == f"v{project.promoted_version().pk}"
    assert len(answer.data["masks"]) == 3


def test_without_a_starter_grabcut_answers(users: Any, settings: Any) -> None:
    settings.MASKLOOP_STARTER_CHECKPOINT = "none"
    assert create_project("p", owner=users["admin"]).promoted_version() is None
    settings.MASKLOOP_STARTER_CHECKPOINT = "/nowhere/starter.pth"
    assert create_project("q", owner=users["admin"]).promoted_version() is None


def test_thresholds_calibrated_for_the_starter_become_new_projects_defaults(
    starter: Path, users: Any
) -> None:
    card_path = starter.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["automatic"] = {"thresholds": {"pred_iou_thresh": 0.61, "stability_score_thresh": 0.7}}
    card_path.write_text(json.dumps(card))
    project = create_project("calibrated", owner=users["admin"])
    project.refresh_from_db()
    assert project.settings["automatic"] == {"pred_iou_thresh": 0.61, "stability_score_thresh": 0.7}
    # A project's own choice is kept.
    own = create_project(
        "own", owner=users["admin"], settings={"automatic": {"pred_iou_thresh": 0.8}}
    )
    own.refresh_from_db()
    assert own.settings["automatic"] == {"pred_iou_thresh": 0.8}

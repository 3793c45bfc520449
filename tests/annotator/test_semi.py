"""The semi-automatic stage: unopened images are pre-filled by the model in the background
when the project enters the stage, and new uploads while it is in it."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

from annotator.models import AutomaticLabel, Image, Job, Mask
from engine import images
from tests.annotator.test_annotate import promote_tiny_sam
from tests.annotator.test_automatic import LOOSE, blob_image
from tests.annotator.test_jobs_celery import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def semi_project(project_factory: Any) -> Any:
    project = project_factory("Semi")
    project.settings = {"semi": LOOSE}  # a random-weight model is not calibrated
    project.save()
    for seed in range(3):
        images.store(project, images.prepare(blob_image(seed), f"s{seed}.png"))
    opened = project.images.order_by("id").last()
    Image.objects.filter(pk=opened.pk).update(state="in_progress")
    return project, opened


def test_entering_the_stage_prefills_the_unopened_images(
    semi_project: Any,
    users: Any,
    client_for: Any,
    worker: Any,
) -> None:
    project, opened = semi_project
    version = promote_tiny_sam(project)
    client = client_for(users["admin"])
    response = client.patch(f"/api/projects/{project.pk}/", {"stage": "semi"}, format="json")
    assert response.status_code == 200, response.data
    job = Job.objects.get(project=project, kind="automatic")
    assert job.params["source"] == "semi" and job.params["settings"]["points_per_side"] == 4
    job = wait_for(job.pk, timeout=120)
    assert job.state == "succeeded", job.message
    labelled = set(AutomaticLabel.objects.filter(source="semi").values_list("image_id", flat=True))
    assert labelled == set(project.images.exclude(pk=opened.pk).values_list("pk", flat=True))
    prefilled = Mask.objects.filter(image__project=project, source_stage="semi")
    assert prefilled.exists() and not prefilled.filter(image=opened).exists()
    assert set(prefilled.values_list("model_version_id", flat=True)) == {version.pk}
    # Pre-filled images still wait for their annotator; no automatic-stage masks were made.
    assert set(project.images.exclude(pk=opened.pk).values_list("state", flat=True)) == {"new"}
    assert not Mask.objects.filter(image__project=project, source_stage="automatic").exists()

    # An upload while in the stage is pre-filled too.
    upload = io.BytesIO(blob_image(7))
    upload.name = "late.png"
    response = client.post(
        f"/api/projects/{project.pk}/images/", {"files": [upload]}, format="multipart"
    )
    assert response.status_code == 201, response.data
    late = project.images.get(file_name="late.png")
    latest = Job.objects.filter(project=project, kind="automatic").order_by("-pk").first()
    assert latest is not None and latest.params["images"] == [late.pk]
    assert wait_for(latest.pk, timeout=120).state == "succeeded"
    assert AutomaticLabel.objects.filter(image=late, source="semi").exists()


def test_without_a_model_the_stage_changes_and_nothing_runs(
    semi_project: Any, users: Any, client_for: Any
) -> None:
    project, _ = semi_project
    response = client_for(users["admin"]).patch(
        f"/api/projects/{project.pk}/", {"stage": "semi"}, format="json"
    )
    assert response.status_code == 200 and response.data["stage"] == "semi"
    assert not Job.objects.filter(project=project).exists()


def test_only_admins_change_the_stage(semi_project: Any, users: Any, client_for: Any) -> None:
    project, _ = semi_project
    promote_tiny_sam(project)
    response = client_for(users["annotator"]).patch(
        f"/api/projects/{project.pk}/", {"stage": "semi"}, format="json"
    )
    assert response.status_code == 403
    project.refresh_from_db()
    assert project.stage == "assisted" and not Job.objects.filter(project=project).exists()


def test_the_command_starts_the_prefill(semi_project: Any, broker: str) -> None:
    project, _ = semi_project
    promote_tiny_sam(project)
    out = io.StringIO()
    call_command("set_stage", str(project.pk), "semi", stdout=out)
    job = Job.objects.get(project=project, kind="automatic")
    assert f"pre-filling its unopened images: job {job.pk}" in out.getvalue()

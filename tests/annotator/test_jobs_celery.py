"""Jobs run by a real Celery worker on the configured broker (Redis on CI, the embedded
filesystem transport on the default settings), never inside the web request."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from annotator.models import Image, Job
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def import_root(tmp_path: Path, settings: Any) -> Path:
    root = tmp_path / "incoming"
    (root / "nested" / "deeper").mkdir(parents=True)
    (root / "a.png").write_bytes(png_bytes(20, 10, seed=1))
    (root / "nested" / "b.png").write_bytes(png_bytes(21, 10, seed=2))
    (root / "nested" / "deeper" / "c.png").write_bytes(png_bytes(22, 10, seed=3))
    (root / "nested" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (root / "readme.txt").write_text("not an image, not even looked at")
    settings.IMPORT_ROOTS = [tmp_path.resolve()]
    return root


def wait_for(job_id: int, timeout: float = 60.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.state not in Job.ACTIVE_STATES:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {Job.objects.get(pk=job_id).state} after {timeout}s")


def test_a_folder_import_runs_on_the_worker(
    worker: Any, import_root: Path, users: Any, project_factory: Any, client_for: Any
) -> None:
    project = project_factory()
    client = client_for(users["admin"])
    response = client.post(
        f"/api/projects/{project.pk}/images/import-folder/",
        {"folder": str(import_root)},
        format="json",
    )
    assert response.status_code == 202, response.data
    job = wait_for(response.data["id"])
    assert job.state == "succeeded", job.message
    assert job.celery_id
    assert job.progress == 1.0
    assert job.result["created"] == 3
    assert list(job.result["errors"]) == ["nested/broken.png"]
    assert sorted(Image.objects.filter(project=project).values_list("file_name", flat=True)) == [
        "a.png",
        "nested/b.png",
        "nested/deeper/c.png",
    ]
    shown = client.get(f"/api/projects/{project.pk}/jobs/{job.pk}/").data
    assert shown["state"] == "succeeded" and shown["result"]["created"] == 3

    again = client.post(
        f"/api/projects/{project.pk}/images/import-folder/",
        {"folder": str(import_root)},
        format="json",
    )
    assert again.status_code == 202
    assert wait_for(again.data["id"]).result["duplicates"] == 3
    assert Image.objects.filter(project=project).count() == 3


def test_the_same_job_twice_is_a_conflict(
    broker: str, import_root: Path, users: Any, project_factory: Any, client_for: Any
) -> None:
    project = project_factory()
    client = client_for(users["admin"])
    url = f"/api/projects/{project.pk}/images/import-folder/"
    first = client.post(url, {"folder": str(import_root)}, format="json")
    assert first.status_code == 202
    second = client.post(url, {"folder": str(import_root)}, format="json")
    assert second.status_code == 409
    assert second.data["job_id"] == first.data["id"]
    assert Job.objects.count() == 1
    cancelled = client.post(f"/api/projects/{project.pk}/jobs/{first.data['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.data["state"] == "cancelled"
    assert client.post(url, {"folder": str(import_root)}, format="json").status_code == 202


def test_a_folder_outside_the_import_roots_is_refused(
    broker: str, import_root: Path, users: Any, project_factory: Any, client_for: Any
) -> None:
    project = project_factory()
    client = client_for(users["admin"])
    for folder in ("/etc", str(import_root / ".." / ".." / ".."), "relative/path"):
        response = client.post(
            f"/api/projects/{project.pk}/images/import-folder/", {"folder": folder}, format="json"
        )
        assert response.status_code == 400, folder
        assert "import root" in response.data["detail"]
    assert Job.objects.count() == 0


def test_a_cancelled_job_is_not_run(
    worker: Any, import_root: Path, users: Any, project_factory: Any
) -> None:
    from engine import jobs

    project = project_factory()
    job = Job.objects.create(
        project=project, kind="import_folder", key="x", params={"folder": str(import_root)}
    )
    jobs.cancel(job)
    jobs.run(job.pk)
    assert Job.objects.get(pk=job.pk).state == "cancelled"
    assert Image.objects.count() == 0


def test_embeddings_are_precomputed_on_the_gpu_queue(
    worker: Any, users: Any, project_factory: Any, client_for: Any, settings: Any
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from engine import embeddings
    from tests.annotator.test_annotate import promote_tiny_sam

    project = project_factory()
    client = client_for(users["admin"])
    before = client.post(f"/api/projects/{project.pk}/embeddings/")
    assert before.status_code == 400  # GrabCut answers: nothing to precompute
    for seed in range(3):
        client.post(
            f"/api/projects/{project.pk}/images/",
            {"files": [SimpleUploadedFile(f"{seed}.png", png_bytes(40, 30, seed=seed))]},
            format="multipart",
        )
    version = promote_tiny_sam(project)
    response = client.post(f"/api/projects/{project.pk}/embeddings/")
    assert response.status_code == 202
    job = wait_for(response.data["id"])
    assert job.state == "succeeded", job.message
    assert job.result == {"computed": 3, "present": 0, "version": 0}
    assert all(embeddings.has_embedding(image, version) for image in project.images.all())

    # A new upload is embedded by the worker without being asked.
    client.post(
        f"/api/projects/{project.pk}/images/",
        {"files": [SimpleUploadedFile("new.png", png_bytes(40, 30, seed=99))]},
        format="multipart",
    )
    new = project.images.get(file_name="new.png")
    deadline = time.monotonic() + 60
    while not embeddings.has_embedding(new, version) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert embeddings.has_embedding(new, version)

"""Exports and imports over the API: 202 jobs, downloads, expiry, bad archives answered 400
with nothing written. Jobs are run here by ``jobs.run`` (the worker's entry point); one test
runs an export on a real Celery worker."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

import engine.tasks  # noqa: F401  (registers the job runners)
from annotator.models import Export, Image, Job, Mask
from engine import jobs
from tests.annotator.fixtures import build_world, snapshot
from tests.annotator.test_jobs_celery import wait_for

pytestmark = pytest.mark.django_db


def export_now(client: Any, project_id: int, **body: Any) -> dict[str, Any]:
    response = client.post(f"/api/projects/{project_id}/exports/", body, format="json")
    assert response.status_code == 202, response.data
    jobs.run(response.data["id"])
    job = Job.objects.get(pk=response.data["id"])
    assert job.state == "succeeded", job.message
    return job.result


def download(client: Any, url: str) -> bytes:
    response = client.get(url)
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def test_admin_exports_and_reviewer_downloads(
    users: Any, project_factory: Any, client_for: Any
) -> None:
    world = build_world(users, project_factory)
    admin = client_for(users["admin"])
    result = export_now(admin, world.project.pk, format="coco", masks_as="polygons")
    assert result["masks"] == 1 and result["images"] == 1
    body = download(client_for(users["reviewer"]), result["download"])
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        names = archive.getnames()
        data = json.load(archive.extractfile("annotations.json"))  # type: ignore[arg-type]
    assert names[0] == "annotations.json" and len(names) == 2
    assert data["annotations"][0]["id"] == world.mask.pk
    listed = admin.get(f"/api/projects/{world.project.pk}/exports/").data["results"]
    assert [row["id"] for row in listed] == [result["export"]]
    assert client_for(users["annotator"]).get(result["download"]).status_code == 403
    assert client_for(users["outsider"]).get(result["download"]).status_code == 404


def test_sa1b_export_and_the_same_request_twice_is_409(
    users: Any, project_factory: Any, client_for: Any
) -> None:
    world = build_world(users, project_factory)
    admin = client_for(users["admin"])
    url = f"/api/projects/{world.project.pk}/exports/"
    first = admin.post(url, {"format": "sa1b", "shard_size": 5}, format="json")
    assert first.status_code == 202
    again = admin.post(url, {"format": "sa1b", "shard_size": 5}, format="json")
    assert again.status_code == 409
    jobs.run(first.data["id"])
    result = Job.objects.get(pk=first.data["id"]).result
    body = download(admin, result["download"])
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        assert archive.getnames() == ["sa_000000.tar"]


def test_bad_export_parameters_are_400(users: Any, project_factory: Any, client_for: Any) -> None:
    world = build_world(users, project_factory)
    admin = client_for(users["admin"])
    url = f"/api/projects/{world.project.pk}/exports/"
    before = snapshot()
    for body in (
        {"format": "voc"},
        {"masks_as": "svg"},
        {"shard_size": 0},
        {"filters": {"colour": "red"}},
        {"filters": {"category": ["bird"]}},
        {"filters": {"created_after": "yesterday"}},
    ):
        assert admin.post(url, body, format="json").status_code == 400, body
    assert snapshot() == before


def test_expired_or_deleted_export_is_404_and_can_be_remade(
    users: Any, project_factory: Any, client_for: Any, django_capture_on_commit_callbacks: Any
) -> None:
    world = build_world(users, project_factory)
    admin = client_for(users["admin"])
    result = export_now(admin, world.project.pk, format="coco", include_images=False)
    export = Export.objects.get(pk=result["export"])
    name = export.file.name
    Export.objects.filter(pk=export.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert admin.get(result["download"]).status_code == 404
    assert not Export.objects.filter(pk=export.pk).exists()
    assert not export.file.storage.exists(name)
    again = export_now(admin, world.project.pk, format="coco", include_images=False)
    assert admin.get(again["download"]).status_code == 200
    assert (
        admin.delete(f"/api/projects/{world.project.pk}/exports/{again['export']}/").status_code
        == 204
    )
    assert admin.get(again["download"]).status_code == 404


def test_project_deletion_counts_exports(users: Any, project_factory: Any, client_for: Any) -> None:
    world = build_world(users, project_factory)
    admin = client_for(users["admin"])
    export_now(admin, world.project.pk, format="coco", include_images=False)
    response = admin.delete(f"/api/projects/{world.project.pk}/")
    assert response.data["deleted"]["exports"] == 1


def evil_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("../../escape.json")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"{}"))
    return buffer.getvalue()


def test_a_bad_archive_upload_is_400_and_writes_nothing(
    users: Any, project_factory: Any, client_for: Any, settings: Any
) -> None:
    world = build_world(users, project_factory)
    before = snapshot()
    response = client_for(users["admin"]).post(
        f"/api/projects/{world.project.pk}/imports/",
        {"format": "sa1b", "file": SimpleUploadedFile("evil.tar", evil_tar())},
        format="multipart",
    )
    assert response.status_code == 400
    assert "leaves the archive" in response.data["detail"]
    assert snapshot() == before
    assert not (Path(settings.MEDIA_ROOT) / "imports").exists()


def test_upload_import_of_an_export_round_trips(
    users: Any, project_factory: Any, client_for: Any, settings: Any
) -> None:
    world = build_world(users, project_factory)
    admin = client_for(users["admin"])
    result = export_now(admin, world.project.pk, format="sa1b")
    body = download(admin, result["download"])
    target = project_factory("Copy", with_members=False)
    response = admin.post(
        f"/api/projects/{target.pk}/imports/",
        {"format": "sa1b", "file": SimpleUploadedFile("export.tar", body)},
        format="multipart",
    )
    assert response.status_code == 202, response.data
    jobs.run(response.data["id"])
    job = Job.objects.get(pk=response.data["id"])
    assert job.state == "succeeded", job.message
    assert job.result["masks"] == 1
    copied = Mask.objects.get(image__project=target)
    assert copied.rle_counts == world.mask.rle_counts and copied.source_stage == "imported"
    assert not list((Path(settings.MEDIA_ROOT) / "imports").rglob("*.tar"))


def test_folder_import_must_be_under_import_roots(
    users: Any, project_factory: Any, client_for: Any, settings: Any, tmp_path: Path
) -> None:
    world = build_world(users, project_factory)
    settings.IMPORT_ROOTS = [(tmp_path / "allowed").resolve()]
    response = client_for(users["admin"]).post(
        f"/api/projects/{world.project.pk}/imports/",
        {"format": "coco", "folder": str(tmp_path)},
        format="json",
    )
    assert response.status_code == 400


def test_an_import_with_a_bad_mask_fails_the_job_naming_it(
    users: Any, project_factory: Any, client_for: Any, settings: Any, tmp_path: Path
) -> None:
    world = build_world(users, project_factory)
    root = tmp_path / "allowed"
    (root / "images").mkdir(parents=True)
    from tests.conftest import png_bytes

    (root / "images" / "x.png").write_bytes(png_bytes(20, 10, seed=42))
    (root / "annotations.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "images/x.png", "width": 20, "height": 10}],
                "categories": [],
                "annotations": [
                    {"id": 77, "image_id": 1, "segmentation": {"size": [9, 20], "counts": [180]}}
                ],
            }
        )
    )
    settings.IMPORT_ROOTS = [root.resolve()]
    response = client_for(users["admin"]).post(
        f"/api/projects/{world.project.pk}/imports/",
        {"format": "coco", "folder": str(root)},
        format="json",
    )
    assert response.status_code == 202
    jobs.run(response.data["id"])
    job = Job.objects.get(pk=response.data["id"])
    assert job.state == "failed" and "annotation 77" in job.message
    assert Image.objects.filter(project=world.project).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("broker")
def test_an_export_runs_on_the_celery_worker(
    users: Any, project_factory: Any, client_for: Any
) -> None:
    from celery.contrib.testing.worker import start_worker

    from annotator.celery import app

    world = build_world(users, project_factory)
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=["cpu"], shutdown_timeout=30
    ):
        response = client_for(users["admin"]).post(
            f"/api/projects/{world.project.pk}/exports/", {"format": "sa1b"}, format="json"
        )
        assert response.status_code == 202
        job = wait_for(response.data["id"])
    assert job.state == "succeeded", job.message
    assert Export.objects.get(pk=job.result["export"]).masks == 1


def test_commands_export_and_import_both_formats(
    users: Any, project_factory: Any, tmp_path: Path
) -> None:
    from django.core.management import call_command

    world = build_world(users, project_factory)
    out = io.StringIO()
    call_command(
        "export_coco",
        str(world.project.pk),
        "--masks-as",
        "polygons",
        "--out",
        str(tmp_path),
        "--filter",
        "review_state=pending",
        verbosity=0,
        stdout=out,
    )
    call_command(
        "export_sa1b",
        str(world.project.pk),
        "--shard-size",
        "1",
        "--out",
        str(tmp_path),
        verbosity=0,
        stdout=out,
    )
    coco_file = next(tmp_path.glob("export-*-coco.tar"))
    sa1b_file = next(tmp_path.glob("export-*-sa1b.tar"))
    for command, source in (("import_coco", coco_file), ("import_sa1b", sa1b_file)):
        target = project_factory(command, with_members=False)
        call_command(command, str(target.pk), str(source), stdout=out)
        copied = Mask.objects.get(image__project=target)
        assert copied.rle_counts == world.mask.rle_counts
    assert "1 images and 1 masks imported" in out.getvalue()


def test_admin_page_lists_and_downloads_exports(
    users: Any, project_factory: Any, django_user_model: Any
) -> None:
    from django.test import Client

    from engine.exports import make_export

    world = build_world(users, project_factory)
    export = make_export(world.project, {"format": "coco", "include_images": False})
    staff = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(staff)
    page = client.get("/admin/annotator/export/")
    assert page.status_code == 200 and b"download" in page.content
    response = client.get(f"/admin/annotator/export/{export.pk}/download/")
    assert response.status_code == 200
    assert json.loads(b"".join(response.streaming_content))["annotations"][0]["id"] == world.mask.pk
    Export.objects.filter(pk=export.pk).update(expires_at=timezone.now())
    assert client.get(f"/admin/annotator/export/{export.pk}/download/").status_code == 404
    assert Client().get(f"/admin/annotator/export/{export.pk}/download/").status_code == 302

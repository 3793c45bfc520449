"""The fully automatic stage as a job: chunks on real Celery workers, idempotent re-runs,
resuming after a worker is killed, and refusals that change nothing."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings as django_settings
from django.db import connection
from PIL import Image as PILImage

from annotator.celery import app
from annotator.models import AutomaticLabel, Job, JobChunk, Mask
from engine import images
from tests.annotator.test_annotate import promote_tiny_sam
from tests.annotator.test_jobs_celery import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
#: Loose filters: a random-weight model's masks are not calibrated (DECISIONS 12a).
LOOSE = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def blob_image(seed: int, width: int = 160, height: int = 120) -> bytes:
    """A red disc on noise, placed by the seed (different images, different files)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 140, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    cx, cy = 50 + 10 * (seed % 6), 50 + 5 * (seed % 4)
    pixels[(xx - cx) ** 2 + (yy - cy) ** 2 < 30**2] = [220, 30, 30]
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def labelled_project(project_factory: Any, settings: Any) -> Any:
    settings.MASKLOOP_AUTOMATIC_CHUNK = 2
    project = project_factory("Automatic")
    for seed in range(5):
        images.store(project, images.prepare(blob_image(seed), f"blob{seed}.png"))
    version = promote_tiny_sam(project)
    return project, version


def start(client: Any, project: Any, **body: Any) -> Any:
    return client.post(f"/api/projects/{project.pk}/automatic/", body, format="json")


def automatic_masks(project: Any) -> list[tuple[int, str]]:
    return sorted(
        Mask.objects.filter(image__project=project, source_stage="automatic").values_list(
            "image_id", "rle_counts"
        )
    )


def test_the_job_labels_every_image_in_chunks_and_a_rerun_replaces(
    labelled_project: Any, users: Any, client_for: Any, worker: Any
) -> None:
    project, version = labelled_project
    client = client_for(users["admin"])
    response = start(client, project, settings=LOOSE)
    assert response.status_code == 202, response.data
    job = wait_for(response.data["id"], timeout=120)
    assert job.state == "succeeded", job.message
    assert job.result["images"] == 5 and job.result["failures"] == []
    assert JobChunk.objects.filter(job=job).count() == 3  # 5 images, 2 per task
    first = automatic_masks(project)
    assert job.result["masks"] == len(first) > 0
    stored = Mask.objects.filter(image__project=project, source_stage="automatic")
    for mask in stored:
        assert mask.model_version_id == version.pk
        assert mask.predicted_iou is not None and mask.stability_score is not None
        assert len(mask.point_coords) == 1 and len(mask.crop_box) == 4
    assert AutomaticLabel.objects.filter(model_version=version).count() == 5

    # Nothing is pending any more: a second "pending" run has nothing to do.
    again = wait_for(start(client, project, settings=LOOSE).data["id"], timeout=60)
    assert again.state == "succeeded" and again.result["images"] == 0
    assert automatic_masks(project) == first

    # A reviewer accepts one mask; re-running everywhere replaces the rest, never duplicates,
    # and keeps the accepted one without adding it again.
    accepted = stored.first()
    assert accepted is not None
    Mask.objects.filter(pk=accepted.pk).update(review_state="accepted")
    rerun = wait_for(start(client, project, images="all", settings=LOOSE).data["id"], timeout=120)
    assert rerun.state == "succeeded" and rerun.result["images"] == 5
    assert automatic_masks(project) == first
    assert Mask.objects.filter(pk=accepted.pk, review_state="accepted").exists()

    summary = client.get(f"/api/projects/{project.pk}/summary/").data["automatic"]
    assert summary == [
        {
            "version": version.number,
            "images": 5,
            "masks": len(first),
            "seconds_per_image": summary[0]["seconds_per_image"],
        }
    ]


def test_a_selection_labels_only_those_images(
    labelled_project: Any, users: Any, client_for: Any, worker: Any
) -> None:
    project, version = labelled_project
    chosen = list(project.images.order_by("id").values_list("pk", flat=True)[:2])
    response = start(client_for(users["admin"]), project, images=chosen, settings=LOOSE)
    job = wait_for(response.data["id"], timeout=60)
    assert job.state == "succeeded", job.message
    done = AutomaticLabel.objects.filter(model_version=version).values_list("image_id", flat=True)
    assert sorted(done) == chosen


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"settings": {"pred_iou": 0.5}}, 400, "unknown generator parameter"),
        ({"settings": {"points_per_side": 0}}, 400, "points_per_side"),
        ({"settings": {"points_per_side": "many"}}, 400, "must be a number"),
        ({"preset": "fastest"}, 400, "preset"),
        ({"images": "some"}, 400, "images must be"),
        ({"images": [999999]}, 400, "not images of this project"),
        ({"version": 999999}, 400, "not a version of this project"),
    ],
)
def test_bad_requests_are_refused_and_start_nothing(
    labelled_project: Any, users: Any, client_for: Any, body: Any, status: int, says: str
) -> None:
    project, _ = labelled_project
    response = start(client_for(users["admin"]), project, **body)
    assert response.status_code == status, response.data
    assert says in str(response.data)
    assert not Job.objects.filter(project=project, kind="automatic").exists()


def test_another_projects_images_and_versions_are_refused(
    labelled_project: Any, project_factory: Any, users: Any, client_for: Any
) -> None:
    project, _ = labelled_project
    other = project_factory("Other")
    foreign = images.store(other, images.prepare(blob_image(9), "other.png"))
    foreign_version = promote_tiny_sam(other)
    client = client_for(users["admin"])
    assert start(client, project, images=[foreign.pk]).status_code == 400
    assert start(client, project, version=foreign_version.pk).status_code == 400
    assert not Job.objects.filter(kind="automatic").exists()


def test_a_project_without_a_model_is_told_why(
    project_factory: Any, users: Any, client_for: Any
) -> None:
    project = project_factory("GrabCut only")
    response = start(client_for(users["admin"]), project)
    assert response.status_code == 409
    assert "needs a model" in str(response.data)


def test_a_second_run_of_the_same_version_while_one_is_active_is_a_conflict(
    labelled_project: Any, users: Any, client_for: Any, broker: str
) -> None:
    project, _ = labelled_project
    client = client_for(users["admin"])
    first = start(client, project, settings=LOOSE)
    assert first.status_code == 202
    second = start(client, project, settings=LOOSE)
    assert second.status_code == 409 and second.data["job_id"] == first.data["id"]


# ----------------------------------------------------------------------- a killed worker


def worker_env() -> dict[str, str]:
    """The environment of a worker process that shares this test's database and files."""
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    else:
        url = f"sqlite:///{db['NAME']}"
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": url,
            "MEDIA_ROOT": str(django_settings.MEDIA_ROOT),
            "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
            "MASKLOOP_STARTER_CHECKPOINT": "none",
            "MASKLOOP_TORCH_THREADS": "1",
        }
    )
    return env


def spawn_worker(log: Path, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "annotator", "worker", "-P", "solo"]
            + ["-Q", "gpu,cpu", "--without-heartbeat", "--without-mingle", "--without-gossip"],
            cwd=ROOT,
            env={**worker_env(), **(extra or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_job_whose_worker_is_killed_resumes_with_the_images_not_yet_done(
    labelled_project: Any, users: Any, client_for: Any, broker: str, settings: Any, tmp_path: Path
) -> None:
    project, version = labelled_project
    settings.MASKLOOP_AUTOMATIC_CHUNK = 1
    # Slow enough per image (about a second) to kill the worker between two images.
    slow = {**LOOSE, "points_per_side": 8}
    for seed in range(5, 8):
        images.store(project, images.prepare(blob_image(seed, 480, 360), f"big{seed}.png"))
    client = client_for(users["admin"])
    log = tmp_path / "worker.log"
    process = spawn_worker(log)
    try:
        job_id = start(client, project, settings=slow).data["id"]
        deadline = time.monotonic() + 120
        while not AutomaticLabel.objects.filter(job_id=job_id).exists():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    done_before = set(AutomaticLabel.objects.values_list("image_id", flat=True))
    assert 1 <= len(done_before) < 8
    assert Job.objects.get(pk=job_id).state == "running"  # nobody is left to say otherwise

    # Its worker is gone: after the stale time a new run of the same version is accepted,
    # marks the lost job failed, and does only the images not yet done.
    settings.MASKLOOP_JOB_STALE_SECONDS = 0
    masks_before = automatic_masks(project)
    app.control.purge()  # the killed worker's unacknowledged tasks: not for this test
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=["gpu", "cpu"], shutdown_timeout=30
    ):
        response = start(client, project, settings=slow)
        assert response.status_code == 202, response.data
        resumed = wait_for(response.data["id"], timeout=180)
    lost = Job.objects.get(pk=job_id)
    assert lost.state == "failed" and "worker lost" in lost.message
    assert resumed.state == "succeeded", resumed.message
    assert resumed.result["images"] == 8 - len(done_before)
    assert AutomaticLabel.objects.filter(model_version=version).count() == 8
    # The images done before the kill kept their masks; none was labelled twice.
    after = automatic_masks(project)
    assert [m for m in after if m[0] in done_before] == [
        m for m in masks_before if m[0] in done_before
    ]
    per_image = Mask.objects.filter(image__project=project, source_stage="automatic")
    labels = {a.image_id: a.masks for a in AutomaticLabel.objects.all()}
    for image_id, count in labels.items():
        assert per_image.filter(image_id=image_id).count() == count


def test_the_command_labels_in_process_and_resumes(labelled_project: Any) -> None:
    from django.core.management import CommandError, call_command

    project, version = labelled_project
    loose = [f"--set={k}={v}" for k, v in LOOSE.items()]
    out = io.StringIO()
    with pytest.raises(CommandError, match="not images of this project"):
        call_command("run_automatic", str(project.pk), "--images", "999999", *loose)
    first = project.images.order_by("id").first()
    call_command("run_automatic", str(project.pk), "--images", str(first.pk), *loose, stdout=out)
    assert list(AutomaticLabel.objects.values_list("image_id", flat=True)) == [first.pk]
    out = io.StringIO()
    call_command("run_automatic", str(project.pk), *loose, stdout=out, verbosity=0)
    assert "4 images labelled" in out.getvalue()  # the pending ones only
    assert AutomaticLabel.objects.filter(model_version=version).count() == 5
    with pytest.raises(CommandError, match="unknown generator parameter"):
        call_command("run_automatic", str(project.pk), "--set", "nms=0.5", verbosity=0)


def test_the_admin_action_queues_the_job(labelled_project: Any, users: Any, client: Any) -> None:
    project, _ = labelled_project
    users["admin"].is_staff = users["admin"].is_superuser = True
    users["admin"].save()
    client.force_login(users["admin"])
    action = {"action": "run_automatic_stage", "_selected_action": [project.pk]}
    response = client.post("/admin/annotator/project/", action, follow=True)
    assert response.status_code == 200
    job = Job.objects.get(project=project, kind="automatic")
    assert f"automatic-stage job {job.pk} queued" in response.content.decode()


def test_the_projects_settings_are_every_runs_defaults(
    labelled_project: Any, users: Any, client_for: Any
) -> None:
    """Thresholds calibrated for the project's model (DECISIONS 12a) apply to runs that name
    none: the API's, the command's, the admin action's, a regeneration's."""
    from django.core.management import call_command

    project, version = labelled_project
    client = client_for(users["admin"])
    patched = client.patch(
        f"/api/projects/{project.pk}/", {"settings": {"automatic": LOOSE}}, format="json"
    )
    assert patched.status_code == 200, patched.data
    job = start(client, project)
    assert job.status_code == 202
    assert job.data["params"]["settings"] == LOOSE and job.data["params"]["preset"] == "fast"
    Job.objects.filter(pk=job.data["id"]).delete()
    # A run's own parameters win over the project's, one by one.
    job = start(client, project, preset="sa1b", settings={"pred_iou_thresh": 0.3})
    assert job.data["params"]["preset"] == "sa1b"
    assert job.data["params"]["settings"] == {**LOOSE, "pred_iou_thresh": 0.3}
    Job.objects.filter(pk=job.data["id"]).delete()

    # In process: the project's loose thresholds keep masks of the random-weight model that
    # the paper's (the preset's own) keep none of.
    out = io.StringIO()
    call_command("run_automatic", str(project.pk), stdout=out, verbosity=0)
    kept = Mask.objects.filter(image__project=project, source_stage="automatic").count()
    assert kept > 0
    strict = ["--set=pred_iou_thresh=0.88", "--set=stability_score_thresh=0.95"]
    call_command("run_automatic", str(project.pk), "--images", "all", *strict, verbosity=0)
    assert not Mask.objects.filter(image__project=project, source_stage="automatic").exists()
    assert AutomaticLabel.objects.filter(model_version=version).count() == 5


@pytest.mark.parametrize(
    ("automatic", "says"),
    [
        ({"pred_iou": 0.5}, "unknown generator parameter"),
        ({"preset": "huge"}, "preset"),
        ({"points_per_side": -1}, "points_per_side"),
        (0.5, "must be an object"),
    ],
)
def test_bad_project_settings_are_refused_on_save(
    labelled_project: Any, users: Any, client_for: Any, automatic: Any, says: str
) -> None:
    project, _ = labelled_project
    response = client_for(users["admin"]).patch(
        f"/api/projects/{project.pk}/", {"settings": {"automatic": automatic}}, format="json"
    )
    assert response.status_code == 400 and says in str(response.data)
    project.refresh_from_db()
    assert "automatic" not in project.settings

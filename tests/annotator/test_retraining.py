"""Retraining cycles: the snapshot of accepted masks, a real cycle on a Celery worker with
the gate, one cycle at a time, and a cycle whose worker is killed mid-training."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from celery.contrib.testing.worker import start_worker

from annotator.celery import app
from annotator.models import Job, Mask, ModelVersion
from engine import images, retraining, rle
from engine.errors import InvalidInput
from tests.annotator.test_annotate import promote_tiny_sam
from tests.annotator.test_automatic import blob_image, spawn_worker
from tests.annotator.test_jobs_celery import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

#: A cycle small enough for the test suite: the same path as a real one.
TINY = {
    "steps": 4,
    "chunk_steps": 2,
    "batch_images": 1,
    "masks_per_image": 2,
    "rounds": 3,
    "loss_rounds": 0,
    "val_images": 2,
    "max_clicks": 3,
}


def disc_mask(seed: int, width: int = 160, height: int = 120) -> np.ndarray:
    """The red disc of ``blob_image(seed)``."""
    yy, xx = np.mgrid[:height, :width]
    cx, cy = 50 + 10 * (seed % 6), 50 + 5 * (seed % 4)
    return (xx - cx) ** 2 + (yy - cy) ** 2 < 30**2


def add_mask(image: Any, mask: np.ndarray, **fields: Any) -> Mask:
    encoded = rle.from_mask(mask)
    return Mask.objects.create(
        image=image,
        rle_counts=encoded.counts,
        bbox=rle.bbox(encoded),
        area=rle.area(encoded),
        **{"source_stage": "assisted", **fields},
    )


@pytest.fixture
def annotated(project_factory: Any, settings: Any, tmp_path: Path) -> Any:
    settings.MASKLOOP_TRAINING_DIR = tmp_path / "training"
    project = project_factory("Cycle")
    for seed in range(6):
        image = images.store(project, images.prepare(blob_image(seed), f"b{seed}.png"))
        add_mask(image, disc_mask(seed))
    base = promote_tiny_sam(project)
    return project, base


def test_the_snapshot_takes_accepted_masks_and_a_stable_split(
    annotated: Any, tmp_path: Path
) -> None:
    project, base = annotated
    image = project.images.first()
    square = np.zeros((120, 160), dtype=bool)
    square[10:30, 10:30] = True
    add_mask(image, square, review_state="rejected")
    add_mask(image, square, source_stage="automatic", model_version=base)  # not reviewed
    kept = add_mask(image, square, source_stage="automatic", review_state="fixed")
    add_mask(image, square, is_crowd=True)

    counts = retraining.write_snapshot(project, tmp_path / "a", 0.2)
    data = json.loads((tmp_path / "a" / "project" / "annotations.json").read_text())
    ids = {a["id"] for a in data["annotations"]}
    assert kept.pk in ids and len(ids) == 7 == counts["masks"]  # 6 discs + the fixed one
    assert counts["images"] == 6 and counts["val_images"] >= 1 and counts["train_images"] >= 1
    # The split is a function of the images alone: a second snapshot agrees.
    retraining.write_snapshot(project, tmp_path / "b", 0.2)
    assert (tmp_path / "a" / "splits.json").read_text() == (
        tmp_path / "b" / "splits.json"
    ).read_text()
    for entry in data["images"]:
        assert (tmp_path / "a" / "project" / entry["file_name"]).is_file()


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"stepz": 3}, "unknown retraining parameters"),
        ({"steps": 0}, "steps must be"),
        ({"metric": "accuracy"}, "metric must be"),
        ({"config": "vit_z"}, "unknown configuration"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"mode": "lora"}, "mode must be one of"),
        ({"mode": "hq", "config": "vit_tiny_test"}, "HQ configuration"),
    ],
)
def test_bad_parameters_are_refused(annotated: Any, overrides: Any, says: str) -> None:
    project, _ = annotated
    with pytest.raises(InvalidInput, match=says):
        retraining.enqueue(project, overrides=overrides)
    assert not Job.objects.filter(kind="retrain").exists()


def test_a_cycle_trains_evaluates_and_gates_one_candidate(
    annotated: Any, users: Any, client_for: Any
) -> None:
    project, base = annotated
    client = client_for(users["admin"])
    app.control.purge()
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=["gpu", "cpu"], shutdown_timeout=60
    ):
        response = client.post(
            f"/api/projects/{project.pk}/retrain/", {"params": TINY}, format="json"
        )
        assert response.status_code == 202, response.data
        again = client.post(f"/api/projects/{project.pk}/retrain/", {}, format="json")
        assert again.status_code == 409 and again.data["job_id"] == response.data["id"]
        job = wait_for(response.data["id"], timeout=300)
    assert job.state == "succeeded", job.message
    figures = job.result["figures"]
    assert figures["baseline_name"] == "v0" and figures["metric"] == "noc@85"
    for side in ("candidate", "baseline"):
        assert figures[side]["objects"] >= 1 and 1 <= figures[side]["noc@85"] <= 3
    candidate = ModelVersion.objects.get(project=project, number=1)
    assert candidate.parent_id == base.pk and candidate.checkpoint
    assert candidate.metrics["cycle"] == figures
    # The gate: promoted exactly when the interval excludes zero, else kept as rejected.
    assert candidate.state == ("promoted" if figures["better"] else "rejected")
    base.refresh_from_db()
    assert base.state == ("retired" if figures["better"] else "promoted")
    assert ModelVersion.objects.filter(project=project).count() == 2


@pytest.mark.parametrize("mode", ["decoder", "hq"])
def test_partial_modes_need_a_promoted_version(project_factory: Any, mode: str) -> None:
    with pytest.raises(InvalidInput, match="promote a version first"):
        retraining.enqueue(project_factory("New"), overrides={"mode": mode})


@pytest.mark.parametrize(
    ("mode", "config"), [("hq", "vit_tiny_test_hq"), ("decoder", "vit_tiny_test")]
)
def test_a_cycle_trains_only_what_its_mode_says(
    annotated: Any, users: Any, client_for: Any, mode: str, config: str
) -> None:
    """Mode hq turns the promoted plain version into its HQ-SAM twin and trains the HQ head
    alone; mode decoder keeps the image encoder. The version records its mode."""
    from model.checkpoints import read_checkpoint
    from model.mask_decoder_hq import HQ_PREFIXES

    project, base = annotated
    app.control.purge()
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=["gpu", "cpu"], shutdown_timeout=60
    ):
        response = client_for(users["admin"]).post(
            f"/api/projects/{project.pk}/retrain/",
            {"params": {**TINY, "mode": mode, "lr": 1e-2}},
            format="json",
        )
        assert response.status_code == 202, response.data
        job = wait_for(response.data["id"], timeout=300)
    assert job.state == "succeeded", job.message
    candidate = ModelVersion.objects.get(project=project, number=1)
    assert candidate.config["name"] == config and candidate.metrics["mode"] == mode
    before = read_checkpoint(base.checkpoint.path)["model"]
    after = read_checkpoint(candidate.checkpoint.path)["model"]
    trained = set()
    for key, tensor in after.items():
        if key.startswith(HQ_PREFIXES) and key not in before:
            trained.add(key)
            continue
        if not torch.equal(tensor, before[key]):
            trained.add(key)
    assert trained, "nothing was trained"
    if mode == "hq":  # every base weight as promoted: "HQ off" answers as the base did
        assert all(k.startswith(HQ_PREFIXES) for k in trained)
    else:
        assert all(not k.startswith("image_encoder.") for k in trained)
        assert any(k.startswith("mask_decoder.") for k in trained)


def test_a_killed_cycle_resumes_from_its_checkpoint_and_yields_one_candidate(
    annotated: Any, users: Any, client_for: Any, settings: Any, tmp_path: Path
) -> None:
    project, _ = annotated
    client = client_for(users["admin"])
    long = {**TINY, "steps": 40}
    log = tmp_path / "worker.log"
    app.control.purge()
    process = spawn_worker(log, {"MASKLOOP_TRAINING_DIR": str(settings.MASKLOOP_TRAINING_DIR)})
    try:
        job_id = client.post(
            f"/api/projects/{project.pk}/retrain/", {"params": long}, format="json"
        ).data["id"]
        last = Path(settings.MASKLOOP_TRAINING_DIR) / f"job{job_id}" / "train" / "last.pt"
        deadline = time.monotonic() + 180
        while not last.exists():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert Job.objects.get(pk=job_id).state == "running"
    assert not ModelVersion.objects.filter(project=project, number=1).exists()

    settings.MASKLOOP_JOB_STALE_SECONDS = 0
    app.control.purge()
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=["gpu", "cpu"], shutdown_timeout=60
    ):
        response = client.post(
            f"/api/projects/{project.pk}/retrain/", {"params": long}, format="json"
        )
        assert response.status_code == 202, response.data
        resumed = wait_for(response.data["id"], timeout=600)
    assert Job.objects.get(pk=job_id).state == "failed"
    assert resumed.state == "succeeded", resumed.message
    assert resumed.result["attempts"] == 2  # the lost cycle's folder, taken over
    assert resumed.result["work"].endswith(f"job{job_id}")
    log_lines = (last.parent / "log.jsonl").read_text().splitlines()
    resumes = [json.loads(line) for line in log_lines if '"start"' in line]
    assert any(r["step"] > 0 for r in resumes)  # training went on from a checkpoint
    assert ModelVersion.objects.filter(project=project).count() == 2  # v0 and one candidate


def test_the_schedule_launches_a_cycle_when_enough_masks_were_accepted(
    annotated: Any, broker: str
) -> None:
    from datetime import timedelta

    from annotator.celery import app as celery_app

    project, _ = annotated
    assert retraining.due(project) is None  # no schedule set
    project.settings = {"retraining": {**TINY, "schedule": {"every_accepted": 3}}}
    project.save()
    assert "6 masks accepted" in str(retraining.due(project))
    (job_id,) = retraining.run_schedule()
    job = Job.objects.get(pk=job_id)
    assert job.message.startswith("scheduled: 6 masks accepted") and job.params["steps"] == 4
    assert retraining.run_schedule() == []  # one cycle at a time, and nothing new since
    Job.objects.filter(pk=job_id).update(state="succeeded")
    assert retraining.due(project) is None
    image = project.images.first()
    for seed in range(3):
        add_mask(image, disc_mask(seed))
    assert "3 masks accepted" in str(retraining.due(project))

    project.settings = {"retraining": {"schedule": {"every_hours": 24}}}
    project.save()
    assert retraining.due(project) is None  # 3 new masks, but not a day yet
    assert "24 hours" in str(retraining.due(project, now=job.created_at + timedelta(hours=25)))
    beat = celery_app.conf.beat_schedule["retraining-schedule"]
    assert beat["task"] == "engine.tasks.retraining_schedule"

"""How a retraining cycle runs its training on a worker.

Several GPUs: the cycle trains under torchrun, one process per GPU. Here the same path runs on
the CPU: ``MASKLOOP_TRAIN_PROCESSES = 2`` makes the cycle launch 2 gloo processes per chunk
through ``python -m torch.distributed.run``, on a real Celery worker, and the cycle must end
as an in-process one does: one candidate, gated.

A worker told to stop (SIGTERM, what ``docker stop`` sends) mid-cycle stops at the chunk's
checkpoint and exits, and the next launch of the cycle resumes from there.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from annotator.celery import app
from annotator.models import Job, ModelVersion
from engine import retraining
from model.train.loop import TrainConfig
from tests.annotator.test_automatic import spawn_worker
from tests.annotator.test_jobs_celery import wait_for
from tests.annotator.test_retraining import TINY, annotated  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_cycle_trains_on_two_processes_and_gates_one_candidate(
    annotated: Any,  # noqa: F811
    users: Any,
    client_for: Any,
    settings: Any,
) -> None:
    project, base = annotated
    settings.MASKLOOP_TRAIN_PROCESSES = 2
    app.control.purge()
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=["gpu", "cpu"], shutdown_timeout=60
    ):
        response = client_for(users["admin"]).post(
            f"/api/projects/{project.pk}/retrain/", {"params": TINY}, format="json"
        )
        assert response.status_code == 202, response.data
        job = wait_for(response.data["id"], timeout=400)
    work = Path(job.result.get("work", ""))
    launched = (work / "torchrun.log").read_text() if (work / "torchrun.log").exists() else ""
    assert job.state == "succeeded", f"{job.message}\n{launched[-3000:]}"

    # Each chunk was a torchrun launch of 2 ranks.
    assert launched.count("torch.distributed.run --standalone --nproc-per-node 2") == (
        TINY["steps"] // TINY["chunk_steps"]
    )
    # Rank 0's log: every step took one image per rank, i.e. a global batch of 2.
    ends = [
        json.loads(line)
        for line in (work / "train" / "log.jsonl").read_text().splitlines()
        if '"event": "end"' in line
    ]
    assert ends[-1]["steps"] == TINY["steps"]
    assert sum(e["images"] for e in ends) == TINY["steps"] * TINY["batch_images"] * 2

    # The cycle went on as usual: one candidate, warm-started from v0, gated.
    candidate = ModelVersion.objects.get(project=project, number=1)
    assert candidate.parent_id == base.pk and candidate.checkpoint
    assert candidate.state == ("promoted" if job.result["figures"]["better"] else "rejected")


def test_the_command_line_carries_every_option_the_cycle_sets(tmp_path: Path) -> None:
    """What the ranks run is the run the worker would have run in its own process."""
    from model.train.__main__ import build_parser, config_from_args

    cfg = TrainConfig(
        config="vit_tiny_test",
        mode="decoder",
        sets=["project"],
        data=str(tmp_path / "data"),
        init=str(tmp_path / "base.pth"),
        seed=4,
        batch_images=3,
        masks_per_image=5,
        rounds=7,
        loss_rounds=3,
        lr=3e-5,
        warmup=2,
        out=str(tmp_path / "train"),
        stop_after=25,
        steps=300,
        threads=2,
        val_images=0,
        progress=False,
    )
    argv = retraining.train_command_line(cfg)
    assert config_from_args(build_parser().parse_args(argv)) == cfg
    resumed = TrainConfig(
        config="", sets=[], resume=str(tmp_path / "train" / "last.pt"), out=cfg.out, steps=300
    )
    argv = retraining.train_command_line(resumed)
    assert config_from_args(build_parser().parse_args(argv)) == resumed


def test_a_worker_told_to_stop_mid_cycle_exits_and_the_cycle_resumes(
    annotated: Any,  # noqa: F811
    users: Any,
    client_for: Any,
    settings: Any,
    tmp_path: Path,
) -> None:
    """The training loop catches SIGTERM to end a chunk at a checkpoint; before this was
    handled, Celery never saw the signal and the worker trained on and kept taking tasks."""
    project, _ = annotated
    client = client_for(users["admin"])
    log = tmp_path / "worker.log"
    app.control.purge()
    process = spawn_worker(log, {"MASKLOOP_TRAINING_DIR": str(settings.MASKLOOP_TRAINING_DIR)})
    try:
        long = {**TINY, "steps": 400, "chunk_steps": 2}
        job_id = client.post(
            f"/api/projects/{project.pk}/retrain/", {"params": long}, format="json"
        ).data["id"]
        last = Path(settings.MASKLOOP_TRAINING_DIR) / f"job{job_id}" / "train" / "last.pt"
        deadline = time.monotonic() + 180
        while not last.exists():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        # Warm shutdown: the task ends at the chunk's checkpoint, then the worker exits.
        assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    stopped = Job.objects.get(pk=job_id)
    assert stopped.state == "failed"
    assert stopped.message.startswith("worker lost: it was told to stop at step"), stopped.message
    assert "Warm shutdown" in log.read_text()
    assert not ModelVersion.objects.filter(project=project, number=1).exists()

    # Launched again, the cycle takes over the stopped one's folder and checkpoint.
    app.control.purge()
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=["gpu", "cpu"], shutdown_timeout=60
    ):
        response = client.post(
            f"/api/projects/{project.pk}/retrain/",
            {"params": {**TINY, "steps": 6}},
            format="json",
        )
        assert response.status_code == 202, response.data
        resumed = wait_for(response.data["id"], timeout=300)
    assert resumed.state == "succeeded", resumed.message
    assert resumed.result["work"].endswith(f"job{job_id}")
    starts = [
        json.loads(line)
        for line in (last.parent / "log.jsonl").read_text().splitlines()
        if '"event": "start"' in line
    ]
    assert starts[-1]["step"] > 0  # resumed from the stopped cycle's checkpoint
    assert ModelVersion.objects.filter(project=project).count() == 2

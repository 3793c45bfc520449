"""An automatic-stage job over 24 images on two worker hosts, each test with one failure mid-job:
a worker host lost (SIGKILL of everything in its namespace), the broker restarted (Redis keeps
nothing: the queued tasks vanish), the database restarted. Each time the job must end
succeeded with every image stored exactly once: one label per image, the label's count of
masks equal to the masks stored, no mask twice (docs/multihost.md)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from tests.multihost.conftest import CHUNK, Cluster, Host, wait_until

IMAGES = 24


def labels(cluster: Cluster, started: dict[str, Any]) -> dict[int, tuple[int, int | None]]:
    """image -> (masks recorded, job) of the version's automatic labels."""
    rows = cluster.query(
        "SELECT image_id, masks, job_id FROM annotator_automaticlabel WHERE model_version_id = %s",
        started["version"],
    )
    assert len(rows) == len({row[0] for row in rows}), "an image has two labels"
    return {image: (masks, job) for image, masks, job in rows}


def assert_every_image_stored_once(cluster: Cluster, started: dict[str, Any]) -> dict[str, Any]:
    """The job succeeded; each image has one label from it and exactly its masks."""
    job = cluster.wait_for_job(started["job"])
    assert job["state"] == "succeeded", f"{job['message']}\n{cluster.logs()}"
    assert job["result"]["images"] == IMAGES
    assert job["result"]["failures"] == []
    stored = labels(cluster, started)
    assert sorted(stored) == sorted(started["images"])
    assert {job_id for _, job_id in stored.values()} == {started["job"]}

    masks = cluster.query(
        "SELECT m.image_id, m.rle_counts FROM annotator_mask m JOIN annotator_image i "
        "ON i.id = m.image_id WHERE i.project_id = %s AND m.source_stage = 'automatic'",
        started["project"],
    )
    duplicated = [pair for pair, n in Counter(masks).items() if n > 1]
    assert duplicated == [], f"masks stored twice on images {[p[0] for p in duplicated]}"
    per_image = Counter(image for image, _ in masks)
    assert {image: per_image[image] for image in stored} == {
        image: count for image, (count, _) in stored.items()
    }, "the masks stored differ from the counts the labels recorded"
    assert sum(per_image.values()) == job["result"]["masks"] > 0

    chunks = cluster.query("SELECT state FROM annotator_jobchunk WHERE job_id = %s", started["job"])
    assert [state for (state,) in chunks] == ["succeeded"] * len(chunks)
    return job


def stored_by(cluster: Cluster, started: dict[str, Any]) -> dict[str, Counter[int]]:
    """host -> how many times its worker's log says it stored each image of the job."""
    return {
        host.name: Counter(image for _, image in cluster.labelled(host, started["job"]))
        for host in cluster.workers
    }


def assert_spread_and_never_twice(cluster: Cluster, started: dict[str, Any]) -> None:
    by_host = stored_by(cluster, started)
    assert all(by_host.values()), f"a worker host did nothing: {by_host}"
    total = sum(by_host.values(), Counter())
    assert [image for image, n in total.items() if n > 1] == [], "an image was stored twice"
    assert set(total) <= set(started["images"])


def progress(cluster: Cluster, started: dict[str, Any]) -> int:
    return len(labels(cluster, started))


def test_a_worker_host_lost_mid_job(cluster: Cluster, workers: list[Host]) -> None:
    started = cluster.start_job("a lost host", IMAGES)
    lost, survivor = workers
    chunks: dict[int, list[int]] = wait_until(
        lambda: dict(
            cluster.query(
                "SELECT id, image_ids FROM annotator_jobchunk WHERE job_id = %s", started["job"]
            )
        ),
        120,
        "the job to be split into chunks",
    )
    assert len(chunks) == IMAGES // CHUNK

    def inside_a_chunk() -> int | None:
        """The chunk the host is in the middle of: one image of it stored, more to do."""
        began = cluster.started_chunks(lost, started["job"])
        if not began:
            return None
        done = [
            image for chunk, image in cluster.labelled(lost, started["job"]) if chunk == began[-1]
        ]
        return began[-1] if 0 < len(done) < len(chunks[began[-1]]) else None

    chunk = wait_until(inside_a_chunk, 180, f"{lost.name} to be inside a chunk")
    lost.kill()
    assert lost.pids() == []

    ((state,),) = cluster.query("SELECT state FROM annotator_jobchunk WHERE id = %s", chunk)
    left = set(chunks[chunk]) - set(labels(cluster, started))
    assert state == "running" and 0 < len(left) < len(chunks[chunk]), "the kill came too late"
    assert cluster.job(started["job"])["state"] == "running"

    job = assert_every_image_stored_once(cluster, started)
    assert_spread_and_never_twice(cluster, started)
    # The lost host's chunk was finished by the other host, from where it stopped.
    assert left and left <= set(stored_by(cluster, started)[survivor.name])
    assert job["params"]["redispatch"]["count"] >= 1


def test_the_broker_restarted_mid_job(cluster: Cluster, workers: list[Host]) -> None:
    assert cluster.redis is not None
    started = cluster.start_job("a restarted broker", IMAGES)
    broker = cluster.redis.client(0)
    wait_until(
        lambda: progress(cluster, started) >= 2 and broker.llen("gpu") >= 2,
        180,
        "two images stored and chunk tasks waiting in Redis",
    )
    cluster.redis.restart()
    broker = cluster.redis.client(0)
    assert broker.llen("gpu") == 0, "the restarted Redis still has the queued tasks"
    assert progress(cluster, started) < IMAGES

    job = assert_every_image_stored_once(cluster, started)
    assert_spread_and_never_twice(cluster, started)
    # The lost tasks came back because the job noticed it stopped moving, not by chance.
    assert job["params"]["redispatch"]["count"] >= 1


def test_the_database_restarted_mid_job(cluster: Cluster, workers: list[Host]) -> None:
    assert cluster.postgres is not None
    started = cluster.start_job("a restarted database", IMAGES)
    wait_until(lambda: progress(cluster, started) >= 3, 180, "three images stored")
    logs = [cluster.log(host, "worker") for host in cluster.workers]
    before = [log.stat().st_size for log in logs]
    cluster.postgres.restart()
    assert progress(cluster, started) < IMAGES

    assert_every_image_stored_once(cluster, started)
    assert_spread_and_never_twice(cluster, started)
    # The chunks that lost their connection were retried, not recorded as failed images.
    since = "".join(
        log.read_bytes()[size:].decode(errors="replace")
        for log, size in zip(logs, before, strict=True)
    )
    assert re.search(r"engine\.tasks\.automatic_chunk\[[^]]+\] retry: Retry in", since)

"""/metrics: who may read it, and figures that move after real actions (requests, clicks on
the websocket, embeddings, jobs on a real worker, messages waiting in the broker, another
process's counts)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from annotator.celery import app
from annotator.models import Job
from engine import jobs
from tests.annotator.test_annotate import disc, promote_tiny_sam, talk  # noqa: F401
from tests.annotator.test_jobs_celery import import_root, wait_for  # noqa: F401
from tests.annotator.test_websocket import session_headers

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def scrape(**headers: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = Client(**headers).get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_open_on_loopback_only_without_a_token() -> None:
    assert Client().get("/metrics").status_code == 200  # the test client is 127.0.0.1
    assert Client(REMOTE_ADDR="203.0.113.7").get("/metrics").status_code == 403
    # A proxy on the same machine makes every visitor look local: it must not open the door.
    proxied = Client(HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert proxied.get("/metrics").status_code == 403


def test_metrics_need_the_bearer_token_when_one_is_set(settings: Any) -> None:
    settings.MASKLOOP_METRICS_TOKEN = "s3cret-scrape-token"
    refused = Client().get("/metrics")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    wrong = Client(REMOTE_ADDR="10.0.0.9", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.get("/metrics").status_code == 401
    right = Client(REMOTE_ADDR="10.0.0.9", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert right.get("/metrics").status_code == 200


def test_request_latency_is_labelled_by_route_name(users: Any, project_factory: Any) -> None:
    project = project_factory()
    client = Client()
    client.force_login(users["admin"])
    key = {"method": "GET", "route": "api:project-detail", "status": "200"}
    before = scrape()
    assert client.get(f"/api/projects/{project.pk}/").status_code == 200
    assert client.get(f"/api/projects/{project.pk + 1000}/").status_code == 404
    assert client.get(f"/projects/{project.pk}/").status_code == 200  # the page, same name
    after = scrape()
    name = "maskloop_http_request_duration_seconds_count"
    assert value(after, name, **key) == value(before, name, **key) + 1
    missing = {**key, "status": "404"}
    assert value(after, name, **missing) == value(before, name, **missing) + 1
    page = {**key, "route": "project-detail"}
    assert value(after, name, **page) == value(before, name, **page) + 1
    assert not any(str(project.pk) in labels_route(k) for k in after)  # never the raw path


def labels_route(key: tuple[str, tuple[tuple[str, str], ...]]) -> str:
    return dict(key[1]).get("route", "")


def test_a_click_on_the_websocket_is_timed_and_its_embedding_counted(
    disc: Any,  # noqa: F811
    users: Any,
) -> None:
    project, image, _ = disc
    promote_tiny_sam(project)
    before = scrape()
    click = {"type": "predict", "id": 1, "points": [[60, 45]], "labels": [1]}
    connected, _, answers = async_to_sync(talk)(
        f"/ws/images/{image.pk}/annotate/", session_headers(users["annotator"]), [click, click]
    )
    assert connected and answers[0]["embedding"] == "computed"
    assert [a["type"] for a in answers[1:]] == ["prediction", "prediction"]
    after = scrape()
    count = "maskloop_click_to_mask_seconds_count"
    assert value(after, count) == value(before, count) + 2
    assert value(after, "maskloop_click_to_mask_seconds_sum") > value(
        before, "maskloop_click_to_mask_seconds_sum"
    )
    computed = "maskloop_embeddings_computed_total"
    assert (
        value(after, computed, source="on_demand")
        == value(before, computed, source="on_demand") + 1
    )


def test_job_durations_come_from_the_job_table(project_factory: Any) -> None:
    project = project_factory()
    now = timezone.now()
    Job.objects.create(
        project=project,
        kind="export",
        key="a",
        state=Job.State.SUCCEEDED,
        started_at=now - timedelta(seconds=12),
        finished_at=now,
    )
    Job.objects.create(
        project=project,
        kind="export",
        key="b",
        state=Job.State.FAILED,
        started_at=now - timedelta(seconds=400),
        finished_at=now,
    )
    Job.objects.create(project=project, kind="export", key="c")  # queued: no duration yet
    samples = scrape()
    name = "maskloop_job_duration_seconds"
    ok = {"kind": "export", "state": "succeeded"}
    assert value(samples, f"{name}_bucket", **ok, le="5.0") == 0
    assert value(samples, f"{name}_bucket", **ok, le="15.0") == 1
    assert value(samples, f"{name}_count", **ok) == 1
    assert value(samples, f"{name}_sum", **ok) == pytest.approx(12)
    failed = {"kind": "export", "state": "failed"}
    assert value(samples, f"{name}_bucket", **failed, le="300.0") == 0
    assert value(samples, f"{name}_bucket", **failed, le="600.0") == 1
    assert value(samples, "maskloop_jobs", kind="export", state="queued") == 1
    assert value(samples, "maskloop_database_up") == 1


def test_a_job_run_by_a_real_worker_shows_in_the_durations(
    worker: Any,
    import_root: Path,  # noqa: F811
    users: Any,
    project_factory: Any,
    client_for: Any,
) -> None:
    project = project_factory()
    before = scrape()
    response = client_for(users["admin"]).post(
        f"/api/projects/{project.pk}/images/import-folder/",
        {"folder": str(import_root)},
        format="json",
    )
    assert response.status_code == 202
    assert wait_for(response.data["id"]).state == "succeeded"
    after = scrape()
    key = {"kind": "import_folder", "state": "succeeded"}
    name = "maskloop_job_duration_seconds_count"
    assert value(after, name, **key) == value(before, name, **key) + 1


def test_queue_lengths_are_read_from_the_broker(broker: str, project_factory: Any) -> None:
    app.control.purge()
    project = project_factory()
    before = scrape()
    assert value(before, "maskloop_broker_up") == 1
    assert value(before, "maskloop_queue_length", queue="cpu") == 0
    jobs.enqueue(project, "export", key="waiting", params={"format": "coco"})  # no worker runs
    jobs.enqueue(project, "embed_images", key="waiting", params={"version": 0})
    after = scrape()
    assert value(after, "maskloop_queue_length", queue="cpu") == 1
    assert value(after, "maskloop_queue_length", queue="gpu") == 1
    app.control.purge()
    assert value(scrape(), "maskloop_queue_length", queue="cpu") == 0


def test_a_broker_that_is_down_does_not_break_the_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "redis://127.0.0.1:1/0"
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    monkeypatch.setitem(app.conf, "broker_url", url)
    monkeypatch.setitem(app.conf, "broker_transport_options", {})
    samples = scrape()
    assert value(samples, "maskloop_broker_up") == 0
    assert value(samples, "maskloop_database_up") == 1


def test_what_another_process_counted_is_in_the_web_scrape() -> None:
    """Workers are other processes: their counts reach /metrics through the shared folder."""
    before = scrape()
    script = (
        "import django; django.setup()\n"
        "from annotator.metrics import EMBEDDINGS_COMPUTED\n"
        "EMBEDDINGS_COMPUTED.labels('precompute').inc(3)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "annotator.settings"}
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=120)
    after = scrape()
    name = "maskloop_embeddings_computed_total"
    assert value(after, name, source="precompute") == value(before, name, source="precompute") + 3


def test_a_worker_serves_its_hosts_figures_on_its_own_port() -> None:
    import urllib.request

    from annotator import metrics
    from tests.served import free_port

    port = free_port()
    server = metrics.start_worker_server(port, addr="127.0.0.1")
    try:
        metrics.EMBEDDINGS_COMPUTED.labels("precompute").inc()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    finally:
        server.shutdown()
    assert "maskloop_embeddings_computed_total" in text
    assert "maskloop_jobs" not in text  # the job table is the web's to report


def test_a_celery_worker_started_with_a_metrics_port_serves_it(tmp_path: Path) -> None:
    import time
    import urllib.error
    import urllib.request

    from tests.served import SERVICE_VARIABLES, free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    # The embedded defaults: a filesystem broker in tmp_path, nothing shared with the suite.
    env.update(MASKLOOP_DATA_DIR=str(tmp_path), MASKLOOP_WORKER_METRICS_PORT=str(port))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "annotator", "worker", "--pool", "solo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as answer:
                    text = answer.read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                assert worker.poll() is None, "the worker stopped"
                assert time.monotonic() < deadline, "no metrics port after 90 s"
                time.sleep(0.5)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert "maskloop_click_to_mask_seconds" in text

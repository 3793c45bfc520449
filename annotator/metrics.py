"""Prometheus metrics, served at ``/metrics`` (docs/deploy.md, "Health and metrics").

Where each figure comes from, and why:

- **Events inside a process** (HTTP request latency, click-to-mask latency, embeddings
  computed) are counted by prometheus_client in multiprocess mode. Settings put
  ``PROMETHEUS_MULTIPROC_DIR`` (default ``<data dir>/prometheus``) in the environment before
  this module imports prometheus_client; every process of the host (daphne, the embedded
  worker, Celery's pool processes) writes its own file there, and ``/metrics`` adds all the
  files up. So the web's /metrics shows what the embedded worker did. A worker on another
  host serves the same figures of its own processes on ``MASKLOOP_WORKER_METRICS_PORT``.
- **Job durations and job counts** are read from the Job table at scrape time: a job spans
  processes and hosts (the chunks of an automatic job finish on several workers, a cancel
  comes from the web), and only the table sees it whole. Nothing is lost when a worker dies.
- **Queue lengths** are read from the broker at scrape time (kombu's own count: LLEN over the
  priority lists on Redis, message files on the filesystem transport), with a short timeout.

Access: open on loopback (unless behind a proxy, where every request comes from loopback),
else only with ``Authorization: Bearer $MASKLOOP_METRICS_TOKEN``.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from ipaddress import ip_address
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


def _process_identifier() -> str:
    # Host and pid: processes of two containers sharing the folder never share a file.
    return f"{socket.gethostname().replace('_', '-')}-{os.getpid()}"


# Every metric below is one of this host's multiprocess files (settings set the folder).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.PROMETHEUS_MULTIPROC_DIR))
values.ValueClass = values.MultiProcessValue(_process_identifier)

HTTP_REQUEST_SECONDS = Histogram(
    "maskloop_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route name and status.",
    ["method", "route", "status"],
    registry=None,
)
CLICK_TO_MASK_SECONDS = Histogram(
    "maskloop_click_to_mask_seconds",
    "From a prompt received on the annotation websocket to its masks computed.",
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0),
    registry=None,
)
EMBEDDINGS_COMPUTED = Counter(
    "maskloop_embeddings_computed",
    "Image embeddings computed: 'precompute' by workers, 'on_demand' when a click came first.",
    ["source"],
    registry=None,
)

JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class JobCollector(Collector):
    """Jobs by kind and state, and the durations of those that ended, from the Job table."""

    def collect(self) -> Iterator[Any]:
        from django.db import DatabaseError

        up = GaugeMetricFamily("maskloop_database_up", "1 when the database answered this scrape.")
        try:
            families = list(self._families())
        except DatabaseError as exc:
            logger.warning("job figures unavailable: %s: %s", type(exc).__name__, exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Any]:
        from django.db.models import Count

        from annotator.models import Job

        counts = GaugeMetricFamily(
            "maskloop_jobs", "Jobs in the database by kind and state.", labels=["kind", "state"]
        )
        for row in Job.objects.values("kind", "state").annotate(n=Count("pk")).order_by():
            counts.add_metric([row["kind"], row["state"]], row["n"])
        yield counts

        # Summed in Python: one query, and date arithmetic differs on each database. Jobs
        # are few (one per import, export, cycle), so the scan stays small.
        ended = Job.objects.filter(
            state__in=[Job.State.SUCCEEDED, Job.State.FAILED, Job.State.CANCELLED],
            started_at__isnull=False,
            finished_at__isnull=False,
        ).values_list("kind", "state", "started_at", "finished_at")
        groups: dict[tuple[str, str], list[float]] = {}
        for kind, state, started, finished in ended.iterator():
            if started is not None and finished is not None:
                took = (finished - started).total_seconds()
                groups.setdefault((kind, state), []).append(took)
        durations = HistogramMetricFamily(
            "maskloop_job_duration_seconds",
            "From a job's start to its end, by kind and final state (from the Job table).",
            labels=["kind", "state"],
        )
        for (kind, state), seconds in sorted(groups.items()):
            buckets = [(str(float(b)), sum(s <= b for s in seconds)) for b in JOB_BUCKETS]
            durations.add_metric([kind, state], [*buckets, ("+Inf", len(seconds))], sum(seconds))
        yield durations


class QueueCollector(Collector):
    """Messages waiting in each Celery queue, read from the broker at scrape time."""

    def collect(self) -> Iterator[Any]:
        from annotator.health import within

        up = GaugeMetricFamily("maskloop_broker_up", "1 when the broker answered this scrape.")
        lengths = GaugeMetricFamily(
            "maskloop_queue_length", "Messages waiting in a Celery queue.", labels=["queue"]
        )
        try:
            counts = within(float(settings.MASKLOOP_READYZ_TIMEOUT), queue_lengths)
        except Exception as exc:
            logger.warning("queue lengths unavailable: %s: %s", type(exc).__name__, exc)
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
            for queue, count in counts.items():
                lengths.add_metric([queue], count)
        yield up
        yield lengths


def queue_lengths() -> dict[str, int]:
    """Messages waiting per queue (those a worker holds unacknowledged are not counted)."""
    from annotator.celery import app

    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1)
        channel = connection.default_channel
        counts = {}
        for name, queue in app.amqp.queues.items():
            declared: Any = queue(channel).queue_declare()
            counts[name] = int(declared.message_count)
        return counts


def registry(*, with_cluster: bool = True) -> CollectorRegistry:
    """This host's processes' figures, plus (for the web) the job table and the queues."""
    collected = CollectorRegistry()
    MultiProcessCollector(collected, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if with_cluster:
        collected.register(JobCollector())
        collected.register(QueueCollector())
    return collected


def may_read(request: HttpRequest) -> bool:
    """The metrics token when one is set; else a direct request from this machine."""
    token = settings.MASKLOOP_METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "")
        return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())
    if settings.SECURE_PROXY_SSL_HEADER or any(
        name in request.headers for name in ("X-Forwarded-For", "X-Real-Ip", "Forwarded")
    ):
        return False  # through a proxy, "from loopback" means nothing
    try:
        return ip_address(request.META.get("REMOTE_ADDR") or "").is_loopback
    except ValueError:
        return False


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not may_read(request):
        if settings.MASKLOOP_METRICS_TOKEN:
            return HttpResponse(
                "send Authorization: Bearer <MASKLOOP_METRICS_TOKEN>\n",
                status=401,
                content_type="text/plain",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return HttpResponse(
            "/metrics is open on loopback only; set MASKLOOP_METRICS_TOKEN to scrape it "
            "from elsewhere\n",
            status=403,
            content_type="text/plain",
        )
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Times every HTTP request; labels it with its route's name, never the raw path."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = self.get_response(request)
            status = response.status_code
            return response
        finally:
            HTTP_REQUEST_SECONDS.labels(
                request.method if request.method in _METHODS else "other",
                route_name(request),
                str(status),
            ).observe(time.perf_counter() - started)


def route_name(request: HttpRequest) -> str:
    probe = getattr(request, "maskloop_route", None)
    if probe:
        return str(probe)
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    name = str(match.view_name or match.route or "unnamed")
    # The API and the pages reuse names (project-detail): the API's get a prefix.
    return f"api:{name}" if request.path_info.startswith("/api/") else name


def start_worker_server(port: int, addr: str = "0.0.0.0") -> Any:
    """A Celery worker's own /metrics (its host's processes), for workers on other hosts.
    Returns the HTTP server (``shutdown()`` stops it)."""
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=addr, registry=registry(with_cluster=False))
    logger.info("worker metrics on %s:%s/metrics", addr, port)
    return server


def _on_worker_ready(**_: Any) -> None:
    if settings.MASKLOOP_WORKER_METRICS_PORT:
        start_worker_server(settings.MASKLOOP_WORKER_METRICS_PORT)


def _connect_worker_signal() -> None:
    from celery.signals import worker_ready

    worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid="maskloop-worker-metrics")


_connect_worker_signal()

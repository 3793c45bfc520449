"""Probes: ``/healthz`` (the process answers) and ``/readyz`` (its dependencies answer).

``/healthz`` checks nothing but the process: a liveness probe that restarts a web process
because the database is down would only add restarts to an outage. ``/readyz`` checks the
database, the broker, the channel layer and the storage, each in its own thread with a short
timeout (``MASKLOOP_READYZ_TIMEOUT``), all at once: 200 when all answer, 503 naming those that
did not. The reasons (which may name internal hosts) are shown only to those who may read
/metrics (loopback or the metrics token); others see which check failed.

``ProbeMiddleware`` answers these paths and ``/metrics`` before Django's host check and HTTPS
redirect: a probe or a scraper reaches the process by its own address, over plain HTTP.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

T = TypeVar("T")


class CheckTimeout(TimeoutError):
    pass


def within(seconds: float, function: Callable[[], T]) -> T:
    """``function()`` in a daemon thread; its result, its exception, or CheckTimeout. A call
    that hangs (a host that drops packets) is left behind, never waited for."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="maskloop-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise CheckTimeout(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    result: T = outcome["value"]
    return result


def check_database() -> str:
    from django.db import connections

    # A connection of its own (the probe thread's), closed at once.
    connection = connections.create_connection("default")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()
    return str(connection.vendor)


def check_broker() -> str:
    from annotator.celery import app

    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        # Redis connects lazily: a round trip proves the server answers. Declared as the
        # workers declare it (a no-op where it exists).
        app.amqp.queues["cpu"](connection.default_channel).queue_declare()
        return str(connection.transport_cls)


def check_channel_layer() -> str:
    """A message through a layer of its own (the web's layer belongs to its event loop)."""
    from channels.layers import channel_layers

    layer = channel_layers.make_backend("default")

    async def round_trip() -> None:
        try:
            name = await layer.new_channel()
            await layer.send(name, {"type": "readyz.ping"})
            message = await layer.receive(name)
            if message.get("type") != "readyz.ping":
                raise RuntimeError(f"the layer answered {message!r}")
        finally:
            close = getattr(layer, "close_pools", None)
            if close is not None:
                await close()

    asyncio.run(round_trip())
    return type(layer).__name__


def check_storage() -> str:
    from django.core.files.storage import FileSystemStorage, storages

    storage = storages["default"]
    if isinstance(storage, FileSystemStorage):
        # The media folder (or the folder it will be made in) must be writable.
        folder = os.path.abspath(storage.location)
        while not os.path.exists(folder):
            folder = os.path.dirname(folder)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"{folder} is not writable")
    elif hasattr(storage, "bucket_name") and hasattr(storage, "connection"):
        # S3: list at most one key under our prefix (a HEAD of a missing key answers 404
        # even when the bucket itself is missing). Needs s3:ListBucket on the prefix.
        s3: Any = storage
        client = s3.connection.meta.client
        client.list_objects_v2(Bucket=s3.bucket_name, Prefix=s3.location, MaxKeys=1)
    else:
        storage.exists(".maskloop-readyz")
    return type(storage).__name__


CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "broker": check_broker,
    "channel_layer": check_channel_layer,
    "storage": check_storage,
}


def readiness(timeout: float | None = None) -> dict[str, dict[str, Any]]:
    """Every check at once; each ``{"ok": bool, "ms": float, "detail": str}``."""
    limit = float(timeout if timeout is not None else settings.MASKLOOP_READYZ_TIMEOUT)
    results: dict[str, dict[str, Any]] = {}

    def run(name: str, check: Callable[[], str]) -> None:
        started = time.perf_counter()
        try:
            detail, ok = within(limit, check), True
        except BaseException as exc:
            detail, ok = f"{type(exc).__name__}: {exc}"[:500], False
        results[name] = {"ok": ok, "ms": round((time.perf_counter() - started) * 1000, 1)}
        results[name]["detail"] = detail

    threads = [
        threading.Thread(target=run, args=(name, check), daemon=True)
        for name, check in CHECKS.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(limit + 1)
    for name in CHECKS:
        results.setdefault(name, {"ok": False, "ms": limit * 1000, "detail": "no answer"})
    return {name: results[name] for name in CHECKS}


def healthz(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> HttpResponse:
    from annotator.metrics import may_read

    checks = readiness()
    failed = [name for name, result in checks.items() if not result["ok"]]
    if not may_read(request):
        for result in checks.values():
            result.pop("detail")
    body = {"status": "unready" if failed else "ready", "failed": failed, "checks": checks}
    return JsonResponse(body, status=503 if failed else 200)


class ProbeMiddleware:
    """Answers GET/HEAD on /healthz, /readyz and /metrics before the rest of the stack."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        from annotator import metrics

        self.get_response = get_response
        self.routes: dict[str, Callable[[HttpRequest], HttpResponse]] = {
            "/healthz": healthz,
            "/readyz": readyz,
            "/metrics": metrics.metrics_view,
        }

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = self.routes.get(request.path_info.rstrip("/") or "/")
        if view is None:
            return self.get_response(request)
        request.maskloop_route = request.path_info.strip("/")  # type: ignore[attr-defined]
        if request.method not in ("GET", "HEAD"):
            return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
        return view(request)

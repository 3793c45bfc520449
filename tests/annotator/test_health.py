"""/healthz and /readyz: alive without dependencies; ready only when the database, broker,
channel layer and storage answer, each within a short timeout, against the real services."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from annotator.celery import app

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a host that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(2)
    for connection in held:
        connection.close()
    server.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def broker_at(monkeypatch: pytest.MonkeyPatch) -> Any:
    def point(url: str) -> None:
        # Celery reads CELERY_BROKER_URL from the environment before its configuration.
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        monkeypatch.setitem(app.conf, "broker_url", url)
        monkeypatch.setitem(app.conf, "broker_write_url", None)
        monkeypatch.setitem(app.conf, "broker_read_url", None)
        monkeypatch.setitem(app.conf, "broker_transport_options", {})

    return point


def test_healthz_answers_without_looking_at_any_dependency(broker_at: Any, settings: Any) -> None:
    broker_at(f"redis://127.0.0.1:{closed_port()}/0")
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed_port()}/0"]},
        }
    }
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_every_dependency_on_the_real_services() -> None:
    response = Client().get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready" and body["failed"] == []
    assert set(body["checks"]) == {"database", "broker", "channel_layer", "storage"}
    assert all(check["ok"] for check in body["checks"].values())
    from django.conf import settings
    from django.db import connection

    assert body["checks"]["database"]["detail"] == connection.vendor
    if settings.CELERY_BROKER_URL.startswith("redis"):
        assert body["checks"]["broker"]["detail"] == "redis"
    if getattr(settings, "REDIS_URL", ""):
        assert body["checks"]["channel_layer"]["detail"] == "RedisChannelLayer"


def test_readyz_names_a_broker_and_a_layer_that_are_down(broker_at: Any, settings: Any) -> None:
    broker_at(f"redis://127.0.0.1:{closed_port()}/0")
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed_port()}/0"]},
        }
    }
    response = Client().get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unready"
    assert body["failed"] == ["broker", "channel_layer"]
    assert body["checks"]["database"]["ok"] and body["checks"]["storage"]["ok"]
    assert "Connection refused" in body["checks"]["broker"]["detail"]


def test_readyz_gives_up_on_a_broker_that_hangs(
    broker_at: Any, settings: Any, silent_port: int
) -> None:
    settings.MASKLOOP_READYZ_TIMEOUT = 1
    broker_at(f"redis://127.0.0.1:{silent_port}/0")
    started = time.monotonic()
    response = Client().get("/readyz")
    elapsed = time.monotonic() - started
    body = response.json()
    assert response.status_code == 503
    assert body["failed"] == ["broker"]
    assert body["checks"]["broker"]["detail"] == "CheckTimeout: no answer within 1 s"
    # The timeout is what ends it (a bound, not a benchmark: without it the request hangs).
    assert elapsed < 10


def test_the_reasons_are_for_operators_only(broker_at: Any) -> None:
    broker_at(f"redis://127.0.0.1:{closed_port()}/0")
    response = Client(REMOTE_ADDR="203.0.113.7").get("/readyz")
    body = response.json()
    assert response.status_code == 503 and body["failed"] == ["broker"]
    assert all("detail" not in check for check in body["checks"].values())


def test_probes_pass_the_host_check_and_the_https_redirect(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["maskloop.example.org"]
    settings.SECURE_SSL_REDIRECT = True
    client = Client(HTTP_HOST="10.1.2.3:8000")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/api/projects/").status_code == 400  # everything else: host refused
    assert client.post("/healthz").status_code == 405

"""Fixtures of the API tests: the configured broker, and a real Celery worker on it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings as django_settings

from annotator.celery import app
from tests.services import redis_url


@pytest.fixture
def broker() -> str:
    url = django_settings.CELERY_BROKER_URL
    if url.startswith("redis"):
        redis_url()  # skip or fail with the install hint when Redis is down
    app.control.purge()
    return url


@pytest.fixture
def worker(broker: str) -> Iterator[Any]:
    with start_worker(
        app, pool="solo", perform_ping_check=False, queues=["gpu", "cpu"], shutdown_timeout=30
    ) as w:
        yield w

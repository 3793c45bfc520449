"""Real components the tests need: present, or a skip (outside CI) / a failure (CI=true)
that names the component and the command that provides it (DECISIONS 9)."""

from __future__ import annotations

import os
import shutil
import socket
from urllib.parse import urlparse

import pytest

ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(component: str, how: str) -> None:
    message = f"{component} is not available; {how}"
    if ON_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def redis_url() -> str:
    """The Redis the tests use: REDIS_URL when set, else the local server."""
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/14"
    if not reachable(url, 6379):
        missing(
            "Redis",
            "start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 "
            '--save "" --appendonly no',
        )
    return url


def chromium_path() -> str:
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
    )
    if path is None:
        missing("Debian's chromium", "install it with: apt-get install chromium chromium-driver")
    assert path is not None
    return path

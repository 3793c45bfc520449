"""The platform as the README's first command starts it: migrate, setup_demo, serve with the
embedded worker, on the embedded defaults (SQLite, filesystem broker, in-memory layer)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SERVICE_VARIABLES = {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log: Path
    starter: str = "none"  # MASKLOOP_STARTER_CHECKPOINT of the platform, for shell() too

    def shell(self, script: str) -> dict[str, Any]:
        """Run a Python script in ``manage.py shell`` against this platform's data and return
        the JSON object its last printed line holds (how browser tests set up their world)."""
        env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
        env["MASKLOOP_DATA_DIR"] = str(self.data_dir)
        # Projects a test creates start as the served platform's do.
        env["MASKLOOP_STARTER_CHECKPOINT"] = self.starter
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def request(
        self, path: str, *, token: str | None = None, data: dict[str, Any] | None = None
    ) -> Any:
        headers = {"Accept": "application/json"}
        body = None
        if token:
            headers["Authorization"] = f"Token {token}"
        if data is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(data).encode()
        request = urllib.request.Request(self.url + path, data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return (
                json.loads(raw)
                if response.headers.get_content_type() == "application/json"
                else raw
            )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_platform(
    data_dir: Path, extra_env: dict[str, str] | None = None, *, worker: bool = True
) -> Iterator[Served]:
    """Without a worker, jobs stay queued: a page can show them without a model training.

    The demo starts with GrabCut unless ``extra_env`` names a starter checkpoint: most page
    tests check what the page does, and GrabCut's answers do not change when the shipped model
    is retrained (tests/browser/test_starter_demo.py serves the shipped model itself)."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update(
        {
            "MASKLOOP_DATA_DIR": str(data_dir),
            "MASKLOOP_STARTER_CHECKPOINT": "none",
            **(extra_env or {}),
        }
    )
    python = sys.executable
    for args in (["migrate", "--no-input", "-v", "0"], ["setup_demo"]):
        subprocess.run(
            [python, "manage.py", *args],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
    port = free_port()
    log = data_dir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [python, "manage.py", "serve", "--port", str(port)]
            + ([] if worker else ["--no-worker"]),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: see the end
        )
    served = Served(
        f"http://127.0.0.1:{port}", process, data_dir, log, env["MASKLOOP_STARTER_CHECKPOINT"]
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                served.request("/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start:\n" + log.read_text()) from None
                time.sleep(0.5)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # A server that does not stop must still not outlive the tests on this machine:
            # it goes with its daphne and worker, and the test says it did not stop.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            raise


def token(served: Served, username: str = "admin", password: str = "maskloop-demo") -> str:
    request = urllib.request.Request(
        served.url + "/api/auth/token/",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["token"])

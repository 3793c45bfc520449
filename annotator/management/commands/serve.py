"""Serve the platform on one machine: the ASGI server plus an embedded Celery worker.

The worker is a real Celery worker in its own process (DECISIONS 8), consuming both queues
from whatever broker is configured (the filesystem transport by default). Stopping the server
(Ctrl-C or SIGTERM) stops the worker too, both gracefully: daphne closes every websocket with
a reconnect hint before it goes (annotator/ws/shutdown.py; the annotation page reconnects by
itself), and the worker makes a warm shutdown (its current task finishes; a retraining cycle
stops at its next checkpoint and resumes when launched again). Whatever has not stopped
after ``STOP_TIMEOUT`` seconds is killed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

#: Seconds the server and the worker get to stop gracefully before they are killed.
STOP_TIMEOUT = 20


class Command(BaseCommand):
    help = "Serve HTTP + websockets with daphne, with an embedded Celery worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-worker", action="store_true", help="do not start the embedded Celery worker"
        )

    def handle(self, *args: Any, host: str, port: int, no_worker: bool, **options: Any) -> None:
        worker = None if no_worker else start_worker()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                host,
                "-p",
                str(port),
                "annotator.asgi:application",
            ]
        )
        self.stdout.write(self.style.SUCCESS(f"Maskloop is serving at http://{host}:{port}/"))

        def stop(*_: Any) -> None:
            for process in (server, worker):
                if process is not None and process.poll() is None:
                    process.terminate()

        signal.signal(signal.SIGTERM, stop)
        try:
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            stop()
            for process in (server, worker):
                if process is not None:
                    try:
                        process.wait(timeout=STOP_TIMEOUT)
                    except subprocess.TimeoutExpired:
                        process.kill()


def start_worker() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "annotator",
            "worker",
            "--queues",
            "gpu,cpu",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--hostname",
            "embedded@%h",
            # Beat inside the embedded worker: the retraining schedule (one machine only;
            # deployments run one `celery beat` of their own, docs/deploy.md).
            "--beat",
            "--schedule",
            str(Path(settings.DATA_DIR) / "celerybeat-schedule"),
        ]
    )

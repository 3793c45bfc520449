"""Structured logs: MASKLOOP_LOG_FORMAT=json writes one JSON object per line, and every record
a job logs carries the job's id, kind and project."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from annotator.logs import ContextFilter, JsonFormatter, log_context
from annotator.models import Job
from engine import jobs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The root logger's records, as the console handler formats them with the JSON format."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.django_db
def test_every_record_of_a_job_carries_its_id_kind_and_project(
    json_lines: io.StringIO, project_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = project_factory()

    def work(context: jobs.JobContext) -> dict[str, Any]:
        logging.getLogger("engine.exports").info("writing %d images", 3)
        logging.getLogger("model.somewhere").warning("deep inside", extra={"shard": 2})
        return {"ok": True}

    def broken(context: jobs.JobContext) -> dict[str, Any]:
        raise RuntimeError("disk full")

    monkeypatch.setitem(jobs._RUNNERS, "export", work)
    monkeypatch.setitem(jobs._RUNNERS, "import_folder", broken)
    done = Job.objects.create(project=project, kind="export", key="a")
    failed = Job.objects.create(project=project, kind="import_folder", key="b")
    logging.getLogger("engine").info("before any job")
    jobs.run(done.pk)
    jobs.run(failed.pk)
    logging.getLogger("engine").info("after the jobs")

    lines = records(json_lines)
    by_message = {line["message"]: line for line in lines}
    context = {"job_id": done.pk, "job_kind": "export", "project_id": project.pk}
    assert by_message["writing 3 images"].items() >= {**context, "level": "INFO"}.items()
    assert by_message["deep inside"].items() >= {**context, "shard": 2}.items()
    assert by_message["deep inside"]["logger"] == "model.somewhere"
    crash = by_message[f"job {failed.pk} failed"]
    assert crash["job_id"] == failed.pk and crash["job_kind"] == "import_folder"
    assert crash["project_id"] == project.pk
    assert "RuntimeError: disk full" in crash["exception"]
    for outside in ("before any job", "after the jobs"):
        assert "job_id" not in by_message[outside]
    assert {"time", "level", "logger", "message", "process"} <= by_message["after the jobs"].keys()


def test_contexts_nest_and_end_with_their_block(json_lines: io.StringIO) -> None:
    log = logging.getLogger("engine.test")
    with log_context(job_id=1):
        with log_context(chunk=4):
            log.info("inner")
        log.info("outer")
    log.info("none")
    inner, outer, none = records(json_lines)
    assert inner["job_id"] == 1 and inner["chunk"] == 4
    assert outer["job_id"] == 1 and "chunk" not in outer
    assert "job_id" not in none


def manage_shell(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MASKLOOP_LOG")}
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_json_format_is_chosen_by_the_environment(tmp_path: Path) -> None:
    script = "import logging; logging.getLogger('engine.jobs').warning('hello %s', 'there')"
    result = manage_shell(script, MASKLOOP_LOG_FORMAT="json", MASKLOOP_DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello there" and line["logger"] == "engine.jobs"
    assert line["level"] == "WARNING"

    text = manage_shell(script, MASKLOOP_DATA_DIR=str(tmp_path))
    assert text.stderr.strip().splitlines()[-1] == "hello there"

    # Celery workers keep these handlers instead of installing their own text ones.
    hijack = "from annotator.celery import app; print(app.conf.worker_hijack_root_logger)"
    shown = manage_shell(hijack, MASKLOOP_LOG_FORMAT="json", MASKLOOP_DATA_DIR=str(tmp_path))
    assert shown.stdout.strip().splitlines()[-1] == "False"

    bad = manage_shell(script, MASKLOOP_LOG_FORMAT="xml", MASKLOOP_DATA_DIR=str(tmp_path))
    assert bad.returncode != 0 and "MASKLOOP_LOG_FORMAT='xml'" in bad.stderr

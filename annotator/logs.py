"""Structured logs: an opt-in JSON format, and a context that rides on every record.

``MASKLOOP_LOG_FORMAT=json`` (settings) makes the console handler write one JSON object per
line. Code that works on behalf of something binds it with ``log_context(...)``; every record
logged inside, by any logger, carries those fields (``engine.jobs.run`` binds ``job_id``,
``job_kind`` and ``project_id``). The context lives in a ``ContextVar``: it follows a thread
or a task and never leaks into another.

Imported by the logging configuration, before the apps are ready: no models at import time.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

_context: ContextVar[dict[str, Any]] = ContextVar("maskloop_log_context", default={})  # noqa: B039

# Attributes every LogRecord has; anything else on a record came from ``extra=`` or a context.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (nested blocks add up)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the bound context onto each record (a handler filter: it never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, process,
    the bound context and ``extra=`` fields, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=str)


F = TypeVar("F", bound=Callable[..., Any])


def job_logging(function: F) -> F:
    """Decorates ``run(job_id)``: the job's id, kind and project ride on all it logs."""

    @functools.wraps(function)
    def wrapper(job_id: int, *args: Any, **kwargs: Any) -> Any:
        from annotator.models import Job

        row = Job.objects.filter(pk=job_id).values_list("kind", "project_id").first()
        kind, project_id = row if row is not None else (None, None)
        with log_context(job_id=job_id, job_kind=kind, project_id=project_id):
            return function(job_id, *args, **kwargs)

    return wrapper  # type: ignore[return-value]

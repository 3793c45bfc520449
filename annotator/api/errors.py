"""Engine errors become clear JSON answers with the right status code."""

from __future__ import annotations

from typing import Any

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from engine.errors import EngineError


def engine_error_response(exc: EngineError) -> Response:
    body: dict[str, Any] = {"error": exc.code, "detail": exc.message}
    body.update(exc.detail)
    return Response(body, status=exc.status_code)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, EngineError):
        return engine_error_response(exc)
    return drf_exception_handler(exc, context)

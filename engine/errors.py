"""Errors the engine raises on bad input. The HTTP layer maps each to its status code."""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Bad input or a refused action; nothing was changed when it is raised."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidInput(EngineError):
    code = "invalid"


class InvalidImage(EngineError):
    code = "invalid_image"


class UnsupportedFormat(EngineError):
    status_code = 415
    code = "unsupported_format"


class ImageTooLarge(EngineError):
    status_code = 413
    code = "image_too_large"


class Conflict(EngineError):
    status_code = 409
    code = "conflict"


class DuplicateImage(Conflict):
    code = "duplicate_image"


class NotAllowed(EngineError):
    status_code = 403
    code = "not_allowed"

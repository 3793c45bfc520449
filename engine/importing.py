"""Import images from a folder on the server (CLI and the import job)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from annotator.models import Project
from engine import images
from engine.errors import DuplicateImage, EngineError, InvalidInput

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif"}


@dataclass
class ImportReport:
    created: list[int] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "created": len(self.created),
            "duplicates": len(self.duplicates),
            "errors": self.errors,
            "image_ids": self.created,
        }


def check_import_root(folder: str | Path) -> Path:
    """The folder, resolved, if it lies under one of IMPORT_ROOTS (DECISIONS 16)."""
    resolved = Path(folder).resolve()
    if not any(resolved == root or root in resolved.parents for root in settings.IMPORT_ROOTS):
        raise InvalidInput(
            f"{folder} is not under an allowed import root (IMPORT_ROOTS)",
            allowed=[str(root) for root in settings.IMPORT_ROOTS],
        )
    if not resolved.is_dir():
        raise InvalidInput(f"{folder} is not a folder")
    return resolved


def find_images(folder: Path) -> Iterator[Path]:
    """Image files under a folder, recursively, in a stable order; links that leave the
    folder are not followed."""
    root = folder.resolve()
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if root not in path.resolve().parents:
            continue
        yield path


def import_folder(
    project: Project,
    folder: Path,
    *,
    user: object | None = None,
    on_progress: Callable[[int, int, Path], bool | None] | None = None,
) -> ImportReport:
    """Import every image under ``folder``. A broken file is reported and skipped, a duplicate
    reported and not stored twice. ``on_progress(done, total, path)`` returning True stops."""
    paths = list(find_images(folder))
    report = ImportReport()
    for index, path in enumerate(paths):
        relative = str(path.relative_to(folder))
        try:
            prepared = images.prepare(path.read_bytes(), relative)
            report.created.append(images.store(project, prepared, user=user).pk)
        except DuplicateImage:
            report.duplicates.append(relative)
        except EngineError as exc:
            report.errors[relative] = exc.message
        if on_progress is not None and on_progress(index + 1, len(paths), path):
            break
    return report

"""Shared arguments of export_sa1b / export_coco and import_coco / import_sa1b."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotator.management.commands._project import find_project
from engine import exports
from engine.errors import EngineError
from engine.io import imports


class ExportCommand(BaseCommand):
    format = ""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or name")
        parser.add_argument("--out", type=Path, help="also copy the export file here")
        parser.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=f"keep only matching masks; NAME among {', '.join(exports.FILTERS)}; "
            "VALUE is JSON or a plain string (repeat for several filters)",
        )
        parser.add_argument("--no-images", action="store_true", help="COCO: the JSON alone")

    def params(self, options: dict[str, Any]) -> dict[str, Any]:
        return {}

    def handle(self, *args: Any, **options: Any) -> None:
        project = find_project(options["project"])
        filters: dict[str, Any] = {}
        for item in options["filter"]:
            name, sep, value = item.partition("=")
            if not sep:
                raise CommandError(f"--filter {item!r}: write NAME=VALUE")
            try:
                filters[name] = json.loads(value)
            except ValueError:
                filters[name] = value
        params = {
            "format": self.format,
            "filters": filters,
            "include_images": not options["no_images"],
            **self.params(options),
        }
        bar = tqdm(total=100, unit="%", disable=options["verbosity"] == 0)

        def on_progress(fraction: float, message: str) -> bool:
            bar.n = int(fraction * 100)
            bar.set_description(message)
            return False

        try:
            export = exports.make_export(project, params, on_progress=on_progress)
        except EngineError as exc:
            raise CommandError(exc.message) from None
        finally:
            bar.close()
        self.stdout.write(
            f"export {export.pk}: {export.images} images, {export.masks} masks, "
            f"{export.size} bytes in {export.file.name} (expires {export.expires_at:%Y-%m-%d %H:%M})"
        )
        if options["out"]:
            out: Path = options["out"]
            if out.is_dir():
                out = out / (export.file.name or "export").rsplit("/", 1)[-1]
            with export.file.open("rb") as source, out.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
            self.stdout.write(f"written to {out}")


class ImportCommand(BaseCommand):
    format = ""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or name")
        parser.add_argument("source", type=Path, help="a folder, a .tar / .zip, or a JSON file")

    def handle(self, *args: Any, **options: Any) -> None:
        project = find_project(options["project"])
        source: Path = options["source"]
        if not source.exists():
            raise CommandError(f"{source} does not exist")
        try:
            report = imports.import_path(project, source.resolve(), self.format)
        except EngineError as exc:
            for problem in exc.detail.get("problems", [])[:50]:
                self.stderr.write(problem["detail"])
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"{report.images} images and {report.masks} masks imported; "
            f"{len(report.duplicates)} images already present (their masks skipped), "
            f"{len(report.empty_masks)} empty masks skipped"
        )

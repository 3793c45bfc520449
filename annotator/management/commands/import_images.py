from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from annotator.management.commands._project import find_project
from engine.importing import import_folder


class Command(BaseCommand):
    help = "Import every image under a folder (recursively) into a project."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or name")
        parser.add_argument("folder", type=Path)

    def handle(self, *args: Any, project: str, folder: Path, **options: Any) -> None:
        target = find_project(project)
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder")
        bar = tqdm(
            unit="image", desc=f"importing into {target.name}", disable=options["verbosity"] == 0
        )

        def on_progress(done: int, total: int, path: Path) -> None:
            bar.total = total
            bar.update(1)

        report = import_folder(target, folder.resolve(), on_progress=on_progress)
        bar.close()
        for name, error in report.errors.items():
            self.stderr.write(f"skipped {name}: {error}")
        self.stdout.write(
            f"{len(report.created)} imported, {len(report.duplicates)} already present, "
            f"{len(report.errors)} refused"
        )

"""Bring a checkpoint into a project as a new model version: ours (the configuration is named
inside) or an official SAM / HQ-SAM / MobileSAM file with ``--config``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotator.management.commands._project import find_project
from engine import versions
from engine.errors import EngineError


class Command(BaseCommand):
    help = "Add a checkpoint to a project as a new model version (checked by loading it)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or name")
        parser.add_argument("checkpoint", type=Path)
        parser.add_argument("--config", default="", help="e.g. vit_b for sam_vit_b_01ec64.pth")
        parser.add_argument("--promote", action="store_true", help="make it answer clicks now")
        parser.add_argument("--notes", default="")

    def handle(self, *args: Any, project: str, checkpoint: Path, **options: Any) -> None:
        target = find_project(project)
        if not checkpoint.is_file():
            raise CommandError(f"{checkpoint} is not a file")
        try:
            version = versions.add_checkpoint(
                target, checkpoint, config_name=options["config"], notes=options["notes"]
            )
            if options["promote"]:
                version = versions.promote(version)
        except EngineError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"{target.name}: v{version.number} ({version.state}) from {checkpoint.name}"
        )

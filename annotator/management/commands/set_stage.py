from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from annotator.management.commands._project import find_project
from annotator.models import Stage


class Command(BaseCommand):
    help = "Move a project to a stage (assisted, semi, automatic)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or name")
        parser.add_argument("stage", choices=Stage.values)

    def handle(self, *args: Any, project: str, stage: str, **options: Any) -> None:
        target = find_project(project)
        target.stage = stage
        target.save(update_fields=["stage", "updated_at"])
        self.stdout.write(f"{target.name} is now in the {stage} stage")

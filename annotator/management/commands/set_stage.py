from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from annotator.management.commands._project import find_project
from annotator.models import Stage
from engine.stages import semi


class Command(BaseCommand):
    help = "Move a project to a stage (assisted, semi, automatic)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or name")
        parser.add_argument("stage", choices=Stage.values)

    def handle(self, *args: Any, project: str, stage: str, **options: Any) -> None:
        target = find_project(project)
        job = semi.set_stage(target, stage)
        self.stdout.write(f"{target.name} is now in the {stage} stage")
        if job is not None:
            self.stdout.write(f"pre-filling its unopened images: job {job.pk}")

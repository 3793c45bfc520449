from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from engine.projects import create_project


class Command(BaseCommand):
    help = "Create a project; the owner becomes its admin. Prints the project id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--owner", required=True, help="username of the project's admin")
        parser.add_argument("--description", default="")
        parser.add_argument("--category", action="append", default=[], dest="categories")

    def handle(self, *args: Any, **options: Any) -> None:
        owner = get_user_model().objects.filter(username=options["owner"]).first()
        if owner is None:
            raise CommandError(f"no user {options['owner']!r}")
        project = create_project(
            options["name"],
            owner=owner,
            description=options["description"],
            categories=options["categories"],
        )
        self.stdout.write(str(project.pk))

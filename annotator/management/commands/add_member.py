from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotator.management.commands._project import find_project
from annotator.models import Membership, Role
from engine.errors import EngineError
from engine.projects import change_role


class Command(BaseCommand):
    help = "Add a user to a project with a role (or change their role)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or name")
        parser.add_argument("username")
        parser.add_argument("role", choices=Role.values)

    def handle(self, *args: Any, project: str, username: str, role: str, **options: Any) -> None:
        target = find_project(project)
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        membership = Membership.objects.filter(project=target, user=user).first()
        try:
            if membership is None:
                Membership.objects.create(project=target, user=user, role=role)
            else:
                change_role(membership, role)
        except EngineError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"{username} is {role} in {target.name}")

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from engine.demo import ensure_demo_project


class Command(BaseCommand):
    help = "Create the demo admin and the demo project (idempotent); print the login."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=os.environ.get("MASKLOOP_DEMO_USER", "admin"))
        parser.add_argument(
            "--password", default=os.environ.get("MASKLOOP_DEMO_PASSWORD", "maskloop-demo")
        )

    def handle(self, *args: Any, username: str, password: str, **options: Any) -> None:
        users = get_user_model()
        user = users.objects.filter(username=username).first()
        if user is None:
            user = users.objects.create_superuser(username=username, email="", password=password)
            login = f"Log in as {username} / {password}"
        else:
            login = f"Log in as {username} (existing user; password unchanged)"
        project, added = ensure_demo_project(user)
        self.stdout.write(f"demo project {project.name!r} (id {project.pk}): {added} photos added")
        self.stdout.write(self.style.SUCCESS(login))

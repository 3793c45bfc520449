"""Project events sent to the members' open pages, after the change commits."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction


def project_group(project_id: int) -> str:
    return f"project.{project_id}"


def publish(project_id: int, payload: dict[str, Any]) -> None:
    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        async_to_sync(layer.group_send)(
            project_group(project_id), {"type": "project.event", "payload": payload}
        )

    transaction.on_commit(send)

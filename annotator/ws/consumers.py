"""Websocket consumers. Every connection is authenticated and limited to the user's projects."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from annotator.models import Project
from annotator.ws import shutdown
from engine.events import project_group
from engine.projects import role_of


class ProjectEventsConsumer(AsyncJsonWebsocketConsumer):
    """Pushes a project's events (job progress, new masks) to its members' pages."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        project_id = self.scope["url_route"]["kwargs"]["project_id"]
        if not await self._is_member(user, project_id):
            # Same answer whether the project exists or not.
            await self.close(code=4403)
            return
        self.group = project_group(project_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        if shutdown.draining():
            await self.close_for_restart()
            return
        shutdown.track(self)

    async def disconnect(self, code: int) -> None:
        shutdown.forget(self)
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def close_for_restart(self) -> None:
        """Close code 4012 ("service restart"): the page may reconnect at once. No JSON
        message: this socket's messages are the project's events."""
        await self.close(code=shutdown.RESTART_CODE)

    async def project_event(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])

    @database_sync_to_async
    def _is_member(self, user: Any, project_id: int) -> bool:
        project = Project.objects.filter(pk=project_id).first()
        return project is not None and role_of(user, project) is not None

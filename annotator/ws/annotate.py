"""Click-to-mask over a websocket: one connection per annotation session on one image."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from annotator.metrics import CLICK_TO_MASK_SECONDS
from annotator.models import Image
from annotator.ws import shutdown
from engine.errors import EngineError
from engine.predictors import answering_version
from engine.projects import role_of
from engine.stages import assisted

MAX_MESSAGE_BYTES = 64 * 1024


class AnnotateConsumer(AsyncWebsocketConsumer):
    """Messages in: ``{"type": "predict", "id": 7, "points": [[x, y]], "labels": [1],
    "box": null, "mask_input": null, "multimask": true, "hq": true}`` (``hq`` only where
    ``ready`` said the version has an HQ head; false answers with its base model). Answers:
    ``ready`` once the image's predictor is set, then ``prediction`` or ``error`` (same
    ``id``) per message. When the web process stops: ``restart`` (with ``retry_ms``), then
    close code 4012 ("service restart"); the client reconnects and gets a new ``ready`` (annotator.ws.shutdown)."""

    session: assisted.ClickSession | None = None

    async def connect(self) -> None:
        image_id = self.scope["url_route"]["kwargs"]["image_id"]
        image = await self._image_for_member(self.scope.get("user"), image_id)
        if image is None:
            await self.close(code=4403)  # same answer for a missing and a foreign image
            return
        await self.accept()
        if shutdown.draining():  # this process is going: straight to one that stays
            await self.close_for_restart()
            return
        shutdown.track(self)
        version = await database_sync_to_async(_answering_version)(image)
        try:
            # The encoder may run here: off the event loop and off the database thread.
            self.session = await sync_to_async(assisted.open_session, thread_sensitive=False)(
                image, version
            )
        except Exception as exc:  # a broken checkpoint must be told, not hang the page
            await self._send(
                {"type": "error", "id": None, "detail": f"cannot open the image: {exc}"}
            )
            await self.close(code=4500)
            return
        await self._send(
            {
                "type": "ready",
                "image": {"id": image.pk, "width": image.width, "height": image.height},
                "model": self.session.model_name,
                "model_version": version.pk if version else None,
                "model_number": version.number if version else None,
                "embedding": self.session.embedding_source,
                "hq": self.session.supports_hq,
                "ms": round(self.session.open_seconds * 1000, 1),
            }
        )

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        message_id = None
        try:
            if text_data is None or len(text_data) > MAX_MESSAGE_BYTES:
                raise EngineError("send JSON text messages of at most 64 KiB")
            try:
                message = json.loads(text_data)
            except json.JSONDecodeError:
                raise EngineError("the message is not JSON") from None
            if not isinstance(message, dict):
                raise EngineError("the message must be a JSON object")
            message_id = message.get("id")
            if message.get("type") != "predict":
                raise EngineError("unknown message type; expected 'predict'")
            if self.session is None:
                raise EngineError("the image is not ready yet")
            prompt = assisted.parse_prompt(message, self.session.image)
            with CLICK_TO_MASK_SECONDS.time():
                answer = await sync_to_async(self.session.predict, thread_sensitive=False)(prompt)
        except EngineError as exc:
            await self._send({"type": "error", "id": message_id, "detail": exc.message})
            return
        await self._send({"type": "prediction", "id": message_id, **answer.as_dict()})

    async def disconnect(self, code: int) -> None:
        shutdown.forget(self)

    async def close_for_restart(self) -> None:
        """The reconnect hint, then close code 4012 ("service restart")."""
        await self._send(
            {
                "type": "restart",
                "detail": "the server is restarting; reconnect",
                "retry_ms": shutdown.RETRY_MS,
            }
        )
        await self.close(code=shutdown.RESTART_CODE)

    async def _send(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload))

    @database_sync_to_async
    def _image_for_member(self, user: Any, image_id: int) -> Image | None:
        image = Image.objects.select_related("project").filter(pk=image_id).first()
        if image is None or role_of(user, image.project) is None:
            return None
        return image


def _answering_version(image: Image) -> Any:
    return answering_version(image.project)

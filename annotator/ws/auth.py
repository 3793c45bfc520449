"""Websocket authentication by API token, for scripts: ``Authorization: Token <key>`` or
``?token=<key>`` (browsers cannot set headers on a websocket). The browser's session cookie
is handled by Channels' AuthMiddlewareStack inside this middleware."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from rest_framework.authtoken.models import Token


@database_sync_to_async
def _user_for(key: str) -> Any:
    token = Token.objects.select_related("user").filter(key=key).first()
    return token.user if token is not None and token.user.is_active else None


def _token_key(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            kind, _, key = value.decode("latin-1").partition(" ")
            if kind.lower() == "token" and key:
                return key.strip()
    keys = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return keys[0] if keys else None


class TokenAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = _token_key(scope)
        if key is not None:
            user = await _user_for(key)
            if user is not None:
                scope = {**scope, "user": user}
        return await super().__call__(scope, receive, send)

"""Graceful restart of a web process: open websockets are closed with a reconnect hint.

When daphne is told to stop (SIGTERM from ``manage.py serve``, ``docker stop`` or a rolling
deploy; SIGINT), every websocket of this process gets, before the server goes down:

- on the annotation socket, a JSON message ``{"type": "restart", "retry_ms": ...}``;
- then a close frame with code 4012, on every socket: "service restart". The registered code
  for that is 1012 (IANA), but daphne's websocket layer (autobahn) lets an application close
  only with 1000 or 3000-4999 and drops the close frame otherwise (measured: the client then
  sees no close frame at all), so we use the private-use code 1012 + 3000. The page treats
  1012 and 4012 alike.

The annotation page (model-socket.js) then reconnects by itself after about ``retry_ms``
(with jitter, then backing off while no server answers), sets its image up again and re-sends
the prompt in flight; the user's draft stays. Without this the connections just drop (the
browser reports 1006, "abnormal closure"), which looks like a crash rather than a restart.

The hook is a Twisted "before shutdown" trigger, installed when the ASGI application is
imported inside daphne (``install``, called by routing.py): the reactor waits for it, so the
close frames leave before daphne cancels the connections' applications and the listeners
close. Under another ASGI server nothing is installed and sockets drop as before.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import weakref
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: Close code: "service restart" (the client should reconnect); see the module docstring.
RESTART_CODE = 4012
#: Hint to clients: about when to try again (the page adds jitter so that a room of annotators
#: does not reconnect in the same millisecond).
RETRY_MS = 1000
#: How long the closing process waits for close frames to go out and clients to answer.
CLOSE_GRACE_SECONDS = 0.5


class Restartable(Protocol):
    async def close_for_restart(self) -> None: ...


_live: weakref.WeakSet[Any] = weakref.WeakSet()
_state = {"draining": False, "installed": False}


def track(consumer: Restartable) -> None:
    """A connected consumer, to be closed with the hint if the process stops."""
    _live.add(consumer)


def forget(consumer: Restartable) -> None:
    _live.discard(consumer)


def draining() -> bool:
    """The process is stopping: a socket that connects now is told to go elsewhere."""
    return bool(_state["draining"])


async def close_all(*, grace: float = CLOSE_GRACE_SECONDS) -> int:
    """Tell every open socket of this process to reconnect, close it with 4012, and give the
    close frames ``grace`` seconds to leave. Returns how many sockets were closed."""
    _state["draining"] = True
    consumers = list(_live)
    results = await asyncio.gather(
        *(consumer.close_for_restart() for consumer in consumers), return_exceptions=True
    )
    for consumer, result in zip(consumers, results, strict=True):
        forget(consumer)
        if isinstance(result, BaseException):  # a socket that went meanwhile: nothing to do
            logger.debug("closing %r for the restart: %s", consumer, result)
    if consumers:
        logger.info("restart: %d websocket(s) closed with code %d", len(consumers), RESTART_CODE)
        await asyncio.sleep(grace)
    return len(consumers)


def install() -> bool:
    """Under daphne, run ``close_all`` when the reactor begins to shut down. Returns whether a
    hook was installed (once per process; never outside daphne)."""
    reactor: Any = sys.modules.get("twisted.internet.reactor")
    if _state["installed"] or reactor is None or "daphne.server" not in sys.modules:
        return False
    from twisted.internet import defer

    def before_shutdown() -> Any:
        loop = asyncio.get_event_loop()  # daphne's: the asyncio reactor's loop
        return defer.Deferred.fromFuture(loop.create_task(close_all()))

    # Added at import time of the application, so before daphne's own trigger, which cancels
    # the connections' applications: the sockets are still open when this runs.
    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
    _state["installed"] = True
    return True

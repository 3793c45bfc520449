"""The project events websocket: authenticated, origin-checked, members only; job progress
reaches the page through the configured channel layer (Redis on CI)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from annotator.asgi import application
from annotator.models import Job
from tests.services import redis_url

pytestmark = pytest.mark.django_db(transaction=True)


def session_headers(user: Any, origin: str = "http://127.0.0.1") -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    return [(b"cookie", cookie.encode()), (b"origin", origin.encode()), (b"host", b"127.0.0.1")]


async def connect(
    path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[bool, Any, WebsocketCommunicator]:
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect(timeout=5)
    return connected, code, communicator


@pytest.fixture(autouse=True)
def _layer() -> None:
    if django_settings.REDIS_URL:
        redis_url()


def test_a_member_receives_job_progress(users: Any, project_factory: Any) -> None:
    from engine.jobs import JobContext

    project = project_factory()
    job = Job.objects.create(project=project, kind="import_folder", key="k")
    headers = session_headers(users["annotator"])

    async def scenario() -> dict[str, Any]:
        connected, _, communicator = await connect(f"/ws/projects/{project.pk}/events/", headers)
        assert connected
        from channels.db import database_sync_to_async

        await database_sync_to_async(JobContext(job).progress)(0.5, "half way")
        message = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return message

    message = async_to_sync(scenario)()
    assert message["event"] == "job"
    assert message["id"] == job.pk
    assert message["progress"] == 0.5
    assert message["message"] == "half way"


def test_a_socket_idle_longer_than_the_layers_blocking_read_stays_open(
    users: Any, project_factory: Any
) -> None:
    """The channel layer waits for messages with a 5 s blocking pop on Redis; with redis-py's
    default 5 s read timeout an idle socket died with 1011 every 5 s (seen with two web
    processes in bench/load_clicks.py). Idle for 7 s, it must still get its messages."""
    import asyncio

    from channels.db import database_sync_to_async

    from engine.jobs import JobContext

    project = project_factory()
    job = Job.objects.create(project=project, kind="import_folder", key="idle")
    headers = session_headers(users["annotator"])

    async def scenario() -> dict[str, Any]:
        connected, _, communicator = await connect(f"/ws/projects/{project.pk}/events/", headers)
        assert connected
        await asyncio.sleep(7)
        assert await communicator.receive_nothing(timeout=0.1)
        await database_sync_to_async(JobContext(job).progress)(0.25, "after a pause")
        message = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return message

    message = async_to_sync(scenario)()
    assert message["progress"] == 0.25
    assert message["message"] == "after a pause"


@pytest.mark.parametrize("who", ["outsider", "anonymous"])
def test_non_members_are_refused(who: str, users: Any, project_factory: Any) -> None:
    project = project_factory()
    headers = (
        [(b"origin", b"http://127.0.0.1")] if who == "anonymous" else session_headers(users[who])
    )

    async def scenario() -> tuple[bool, Any]:
        connected, code, communicator = await connect(f"/ws/projects/{project.pk}/events/", headers)
        await communicator.disconnect()
        return connected, code

    connected, code = async_to_sync(scenario)()
    assert not connected
    assert code == 4403


def test_a_foreign_origin_is_refused(users: Any, project_factory: Any) -> None:
    project = project_factory()
    headers = session_headers(users["admin"], origin="http://evil.example")

    async def scenario() -> bool:
        connected, _, communicator = await connect(f"/ws/projects/{project.pk}/events/", headers)
        await communicator.disconnect()
        return connected

    assert async_to_sync(scenario)() is False


# --------------------------------------------------------------------------- graceful restart


@pytest.fixture
def shutdown_state() -> Any:
    """close_all marks this process as draining: undone after the test (one pytest process)."""
    from annotator.ws import shutdown

    yield shutdown
    shutdown._state["draining"] = False


def test_a_stopping_process_tells_every_socket_to_reconnect(
    users: Any, project_factory: Any, shutdown_state: Any
) -> None:
    from engine import images
    from tests.conftest import png_bytes

    project = project_factory()
    image = images.store(project, images.prepare(png_bytes(), "a.png"))
    headers = session_headers(users["annotator"])
    annotate_path = f"/ws/images/{image.pk}/annotate/"

    async def scenario() -> dict[str, Any]:
        _, _, annotate = await connect(annotate_path, headers)
        ready = await annotate.receive_json_from(timeout=30)
        _, _, events = await connect(f"/ws/projects/{project.pk}/events/", headers)
        closed = await shutdown_state.close_all(grace=0)
        out = {
            "ready": ready,
            "closed": closed,
            "hint": await annotate.receive_json_from(timeout=5),
            "annotate_close": await annotate.receive_output(timeout=5),
            "events_close": await events.receive_output(timeout=5),
        }
        # A page that connects while the process drains is sent on at once.
        _, _, late = await connect(annotate_path, headers)
        out["late_hint"] = await late.receive_json_from(timeout=5)
        out["late_close"] = await late.receive_output(timeout=5)
        return out

    got = async_to_sync(scenario)()
    assert got["ready"]["type"] == "ready"
    assert got["closed"] == 2
    assert got["hint"] == {
        "type": "restart",
        "detail": "the server is restarting; reconnect",
        "retry_ms": shutdown_state.RETRY_MS,
    }
    for key in ("annotate_close", "events_close", "late_close"):
        assert got[key] == {"type": "websocket.close", "code": 4012}, key
    assert got["late_hint"]["type"] == "restart"


@pytest.mark.slow
def test_a_served_web_process_told_to_stop_closes_sockets_with_the_restart_code(
    tmp_path: Any,
) -> None:
    """daphne under ``manage.py serve``, stopped with SIGTERM (as by docker stop or a deploy):
    the open annotation socket gets the hint and close code 4012, not a dropped connection."""
    import json

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect as ws_connect

    from tests.served import serve_platform, token

    with serve_platform(tmp_path / "data", worker=False) as served:
        key = token(served)
        image = served.request("/api/projects/1/images/?file_name=coffee.png", token=key)
        image_id = image["results"][0]["id"]
        url = served.url.replace("http", "ws") + f"/ws/images/{image_id}/annotate/?token={key}"
        with ws_connect(url, additional_headers={"Origin": served.url}) as socket:
            assert json.loads(socket.recv(timeout=120))["type"] == "ready"
            served.process.terminate()
            hint = json.loads(socket.recv(timeout=30))
            with pytest.raises(ConnectionClosed) as closed:
                socket.recv(timeout=30)
        assert served.process.wait(timeout=30) == 0
    assert hint["type"] == "restart" and hint["retry_ms"] > 0
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4012

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

"""Annotators are sent to the next image that needs work, never two to the same one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from annotator.models import Image

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(project_with_two_annotators: Any) -> Any:
    return project_with_two_annotators(3)


def next_for(client: Any, project: Any, after: int | None = None) -> Any:
    body = {"after": after} if after else {}
    return client.post(f"/api/projects/{project.pk}/images/next/", body, format="json")


def test_two_annotators_get_different_images(project: Any, users: Any, client_for: Any) -> None:
    first = next_for(client_for(users["annotator"]), project).data
    second = next_for(client_for(users["second"]), project).data
    assert first["id"] != second["id"]
    assert first["assigned_to"] == "annotator"
    again = next_for(client_for(users["annotator"]), project).data
    assert again["id"] == first["id"]  # a reload keeps the same image


def test_moving_on_releases_the_previous_image(project: Any, users: Any, client_for: Any) -> None:
    client = client_for(users["annotator"])
    first = next_for(client, project).data
    second = next_for(client, project, after=first["id"]).data
    assert second["id"] != first["id"]
    assert Image.objects.get(pk=first["id"]).assigned_to is None


def test_an_expired_lease_frees_the_image(project: Any, users: Any, client_for: Any) -> None:
    held = next_for(client_for(users["annotator"]), project).data
    Image.objects.filter(pk=held["id"]).update(assigned_until=timezone.now() - timedelta(seconds=1))
    other = client_for(users["second"])
    lease = other.post(f"/api/projects/{project.pk}/images/{held['id']}/lease/")
    assert lease.status_code == 200 and lease.data["assigned_to"] == "second"
    refused = client_for(users["annotator"]).post(
        f"/api/projects/{project.pk}/images/{held['id']}/lease/"
    )
    assert refused.status_code == 409


def test_done_images_are_not_handed_out(project: Any, users: Any, client_for: Any) -> None:
    project.images.update(state="annotated")
    assert next_for(client_for(users["annotator"]), project).status_code == 204


def test_new_images_come_before_half_done_ones(project: Any, users: Any, client_for: Any) -> None:
    first = project.images.order_by("id").first()
    project.images.filter(pk=first.pk).update(state="in_progress")
    got = next_for(client_for(users["annotator"]), project).data
    assert got["state"] == "new"


def test_a_lease_is_given_back_and_the_holder_is_named(
    project: Any, users: Any, client_for: Any
) -> None:
    held = next_for(client_for(users["annotator"]), project).data
    url = f"/api/projects/{project.pk}/images/{held['id']}/lease/"
    refused = client_for(users["second"]).post(url)
    assert refused.status_code == 409 and refused.data["assigned_to"] == "annotator"
    client_for(users["second"]).delete(url)  # not theirs: nothing happens
    assert Image.objects.get(pk=held["id"]).assigned_to == users["annotator"]
    assert client_for(users["annotator"]).delete(url).data["assigned_to"] is None
    assert client_for(users["second"]).post(url).status_code == 200

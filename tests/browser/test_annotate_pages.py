"""The server side of the annotation pages (Django's test client, no browser): who may open
them, where "Start annotating" sends an annotator, and what the page is told."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from annotator.models import Image
from engine import images
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(project_with_two_annotators: Any) -> Any:
    return project_with_two_annotators(2)


def client(user: Any) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def page_config(response: Any) -> dict[str, Any]:
    html = response.content.decode()
    start = html.index('<script id="annotate-config" type="application/json">')
    start = html.index(">", start) + 1
    return dict(json.loads(html[start : html.index("</script>", start)]))


def test_start_annotating_leases_the_next_image_and_opens_it(project: Any, users: Any) -> None:
    first = project.images.order_by("id").first()
    response = client(users["annotator"]).get(f"/projects/{project.pk}/annotate/")
    assert response.status_code == 302
    assert response["Location"] == f"/projects/{project.pk}/images/{first.pk}/annotate/"
    first.refresh_from_db()
    assert first.assigned_to == users["annotator"]


def test_two_annotators_are_sent_to_different_images(project: Any, users: Any) -> None:
    one = client(users["annotator"]).get(f"/projects/{project.pk}/annotate/")["Location"]
    two = client(users["second"]).get(f"/projects/{project.pk}/annotate/")["Location"]
    assert one != two


def test_when_nothing_is_left_the_page_says_so(project: Any, users: Any) -> None:
    project.images.update(state=Image.State.ANNOTATED)
    response = client(users["annotator"]).get(f"/projects/{project.pk}/annotate/")
    assert response.status_code == 200
    assert b"Nothing left to annotate" in response.content


def test_the_annotation_page_tells_the_page_what_it_needs(project: Any, users: Any) -> None:
    image = project.images.order_by("id").first()
    response = client(users["annotator"]).get(f"/projects/{project.pk}/images/{image.pk}/annotate/")
    assert response.status_code == 200
    assert "csrftoken" in response.cookies
    config = page_config(response)
    assert config["image"] == {
        "id": image.pk,
        "file_name": image.file_name,
        "width": image.width,
        "height": image.height,
        "state": "new",
        "position": 1,
        "total": 2,
    }
    assert config["urls"]["socket"] == f"/ws/images/{image.pk}/annotate/"
    assert config["urls"]["api"] == f"/api/projects/{project.pk}/"
    assert [c["name"] for c in config["categories"]] == ["cat", "dog"]
    assert config["model"] == {"name": "grabcut", "version": None}
    assert config["user"] == {"username": "annotator", "role": "annotator"}
    assert config["held_by"] is None
    assert b'id="lease-banner" role="alert" hidden' in response.content


def test_it_is_404_for_non_members_and_other_projects_images(
    project: Any, project_factory: Any, users: Any
) -> None:
    image = project.images.first()
    url = f"/projects/{project.pk}/images/{image.pk}/annotate/"
    assert client(users["outsider"]).get(url).status_code == 404
    assert client(users["outsider"]).get(f"/projects/{project.pk}/annotate/").status_code == 404
    other = project_factory("Other")
    foreign = images.store(other, images.prepare(png_bytes(seed=9), "x.png"))
    response = client(users["admin"]).get(f"/projects/{project.pk}/images/{foreign.pk}/annotate/")
    assert response.status_code == 404


def test_it_asks_anonymous_visitors_to_log_in(project: Any) -> None:
    image = project.images.first()
    response = Client().get(f"/projects/{project.pk}/images/{image.pk}/annotate/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_a_reviewer_may_open_an_image_another_annotator_holds_and_is_warned(
    project: Any, users: Any
) -> None:
    image = project.images.first()
    Image.objects.filter(pk=image.pk).update(
        assigned_to=users["annotator"], assigned_until=timezone.now() + timedelta(minutes=5)
    )
    response = client(users["reviewer"]).get(f"/projects/{project.pk}/images/{image.pk}/annotate/")
    assert response.status_code == 200
    assert page_config(response)["held_by"] == "annotator"
    assert b"annotator is annotating this image right now" in response.content
    image.refresh_from_db()
    assert image.assigned_to == users["annotator"]  # opening the page takes nothing away


def test_the_project_page_links_every_image_to_its_annotation_page(
    project: Any, users: Any
) -> None:
    response = client(users["annotator"]).get(f"/projects/{project.pk}/")
    html = response.content.decode()
    assert f'href="/projects/{project.pk}/annotate/"' in html
    assert "2 to do" in html
    for image in project.images.all():
        assert f'href="/projects/{project.pk}/images/{image.pk}/annotate/"' in html
    assert html.count('class="state-badge state-new"') == 2

"""The server side of the dashboard page (Django's test client, no browser): who may open it,
what the page is told, the admin-only controls, and the project page's link to it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def client(user: Any) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def config_of(response: Any) -> dict[str, Any]:
    html = response.content.decode()
    start = html.index('<script id="dashboard-config" type="application/json">')
    start = html.index(">", start) + 1
    return dict(json.loads(html[start : html.index("</script>", start)]))


def test_every_member_opens_the_dashboard_and_only_admins_get_the_controls(
    project_factory: Any, users: Any
) -> None:
    project = project_factory("Dash")
    for name in ("admin", "annotator", "reviewer"):
        response = client(users[name]).get(f"/projects/{project.pk}/dashboard/")
        assert response.status_code == 200
        assert "csrftoken" in response.cookies
        config = config_of(response)
        admin = name == "admin"
        assert config["user"] == {"username": name, "role": name}
        assert config["can"] == {"stage": admin, "retrain": admin}
        assert config["project"] == {"id": project.pk, "name": "Dash", "stage": "assisted"}
        assert config["urls"]["api"] == f"/api/projects/{project.pk}/"
        assert config["urls"]["socket"] == f"/ws/projects/{project.pk}/events/"
        assert [s["value"] for s in config["stages"]] == ["assisted", "semi", "automatic"]
        html = response.content.decode()
        assert ('id="retrain"' in html) is admin
        assert ('id="stage-select"' in html) is admin
        assert ('id="stage-badge"' in html) is not admin


def test_it_is_404_for_outsiders_and_asks_strangers_to_log_in(
    project_factory: Any, users: Any
) -> None:
    project = project_factory("Dash")
    url = f"/projects/{project.pk}/dashboard/"
    assert client(users["outsider"]).get(url).status_code == 404
    assert client(users["admin"]).get("/projects/999999/dashboard/").status_code == 404
    anonymous = Client().get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/login/")


def test_the_project_page_links_to_the_dashboard(project_factory: Any, users: Any) -> None:
    project = project_factory("Dash")
    for name in ("admin", "annotator", "reviewer"):
        html = client(users[name]).get(f"/projects/{project.pk}/").content.decode()
        assert f'href="/projects/{project.pk}/dashboard/"' in html

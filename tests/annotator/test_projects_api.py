"""Projects, members, categories and model versions through the API."""

from __future__ import annotations

from typing import Any

import pytest

from annotator.models import Membership, ModelVersion, Project

pytestmark = pytest.mark.django_db


def test_a_user_creates_a_project_and_becomes_its_admin(users: Any, client_for: Any) -> None:
    client = client_for(users["outsider"])
    response = client.post(
        "/api/projects/", {"name": "Birds", "categories": ["sparrow", "owl"]}, format="json"
    )
    assert response.status_code == 201, response.data
    assert response.data["my_role"] == "admin"
    assert response.data["stage"] == "assisted"
    project = Project.objects.get(name="Birds")
    assert Membership.objects.get(project=project).user == users["outsider"]
    names = [
        c["name"] for c in client.get(f"/api/projects/{project.pk}/categories/").data["results"]
    ]
    assert names == ["sparrow", "owl"]


def test_the_admin_moves_the_project_through_the_stages(
    users: Any, project_factory: Any, client_for: Any
) -> None:
    project = project_factory()
    client = client_for(users["admin"])
    for stage in ("semi", "automatic", "assisted"):
        assert (
            client.patch(f"/api/projects/{project.pk}/", {"stage": stage}, format="json").data[
                "stage"
            ]
            == stage
        )
    bad = client.patch(f"/api/projects/{project.pk}/", {"stage": "manual"}, format="json")
    assert bad.status_code == 400
    project.refresh_from_db()
    assert project.stage == "assisted"


def test_members_are_managed_and_the_last_admin_stays(
    users: Any, project_factory: Any, client_for: Any
) -> None:
    project = project_factory()
    client = client_for(users["admin"])
    base = f"/api/projects/{project.pk}/members/"
    added = client.post(base, {"username": "outsider", "role": "reviewer"}, format="json")
    assert added.status_code == 201
    twice = client.post(base, {"username": "outsider", "role": "annotator"}, format="json")
    assert twice.status_code == 400
    unknown = client.post(base, {"username": "nobody", "role": "annotator"}, format="json")
    assert unknown.status_code == 400
    own = Membership.objects.get(project=project, user=users["admin"])
    demote = client.patch(f"{base}{own.pk}/", {"role": "annotator"}, format="json")
    assert demote.status_code == 400
    assert client.delete(f"{base}{own.pk}/").status_code == 400
    assert Membership.objects.get(pk=own.pk).role == "admin"
    roles = {row["username"]: row["role"] for row in client.get(base).data["results"]}
    assert roles == {
        "admin": "admin",
        "annotator": "annotator",
        "reviewer": "reviewer",
        "outsider": "reviewer",
    }


def test_category_names_are_unique_and_used_ones_are_kept(
    users: Any, project_factory: Any, client_for: Any
) -> None:
    from engine import images, masks
    from tests.annotator.fixtures import square_rle
    from tests.conftest import png_bytes

    project = project_factory()
    client = client_for(users["admin"])
    base = f"/api/projects/{project.pk}/categories/"
    assert client.post(base, {"name": "cat"}, format="json").status_code == 400
    assert client.post(base, {"name": "eel", "color": "red"}, format="json").status_code == 400
    image = images.store(project, images.prepare(png_bytes(), "a.png"))
    cat = project.categories.get(name="cat")
    masks.create_mask(
        image, {"segmentation": square_rle(image), "category": cat.pk}, user=users["admin"]
    )
    refused = client.delete(f"{base}{cat.pk}/")
    assert refused.status_code == 400
    assert "used by 1 masks" in refused.data["detail"]


def test_promotion_retires_the_previous_version_and_rollback_works(
    users: Any, project_factory: Any, client_for: Any
) -> None:
    project = project_factory()
    v0 = ModelVersion.objects.create(project=project, number=0, state="promoted")
    v1 = ModelVersion.objects.create(project=project, number=1, parent=v0)
    client = client_for(users["admin"])
    base = f"/api/projects/{project.pk}/model-versions/"
    assert client.post(f"{base}{v1.pk}/promote/").data["state"] == "promoted"
    assert ModelVersion.objects.get(pk=v0.pk).state == "retired"
    assert client.post(f"{base}{v0.pk}/promote/").data["state"] == "promoted"  # rollback
    assert ModelVersion.objects.get(pk=v1.pk).state == "retired"
    assert client.post(f"{base}{v0.pk}/reject/").status_code == 409
    assert project.promoted_version() == ModelVersion.objects.get(pk=v0.pk)
    missing = client.get(f"{base}{v1.pk}/download/")
    assert missing.status_code == 404


def test_deleting_a_project_says_what_went(
    users: Any, project_factory: Any, client_for: Any
) -> None:
    from engine import images, masks
    from tests.annotator.fixtures import square_rle
    from tests.conftest import png_bytes

    project = project_factory()
    for seed in range(2):
        image = images.store(project, images.prepare(png_bytes(seed=seed), f"{seed}.png"))
        masks.create_mask(image, {"segmentation": square_rle(image)}, user=users["admin"])
    response = client_for(users["admin"]).delete(f"/api/projects/{project.pk}/")
    assert response.status_code == 200
    assert response.data["deleted"]["images"] == 2
    assert response.data["deleted"]["masks"] == 2
    assert not Project.objects.filter(pk=project.pk).exists()


def test_lists_are_paginated_and_filtered(users: Any, client_for: Any) -> None:
    from engine.projects import create_project

    for i in range(55):
        create_project(f"p{i}", owner=users["admin"])
    client = client_for(users["admin"])
    first = client.get("/api/projects/").data
    assert first["count"] == 55 and len(first["results"]) == 50 and first["next"]
    assert len(client.get("/api/projects/?page=2").data["results"]) == 5
    Project.objects.filter(name="p3").update(stage="semi")
    assert [p["name"] for p in client.get("/api/projects/?stage=semi").data["results"]] == ["p3"]


def test_token_authentication(users: Any, client: Any) -> None:
    users["admin"].set_password("s3cret-pass")
    users["admin"].save()
    token = client.post(
        "/api/auth/token/", {"username": "admin", "password": "s3cret-pass"}
    ).json()["token"]
    response = client.get("/api/me/", HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 200 and response.json()["username"] == "admin"
    assert client.get("/api/me/", HTTP_AUTHORIZATION="Token wrong").status_code == 401


def test_the_openapi_schema_lists_the_endpoints(users: Any, client_for: Any) -> None:
    response = client_for(users["admin"]).get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/projects/",
        "/api/projects/{project_pk}/images/",
        "/api/projects/{project_pk}/masks/{id}/",
        "/api/projects/{project_pk}/jobs/{id}/cancel/",
        "/api/projects/{project_pk}/model-versions/{id}/promote/",
    ):
        assert path in paths, path
    docs = client_for(users["admin"]).get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()

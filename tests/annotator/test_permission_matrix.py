"""Every endpoint x every role x same / other project: the status, and no change on refusal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.annotator.fixtures import World, build_world, snapshot, square_rle
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db

ALL = {"admin", "annotator", "reviewer"}
ADMIN = {"admin"}


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    url: Callable[[World], str]
    allowed: set[str]
    success: int
    body: Callable[[World], dict[str, Any]] | None = None
    multipart: bool = False

    def __str__(self) -> str:
        return self.name


def p(w: World) -> str:
    return f"/api/projects/{w.project.pk}"


ENDPOINTS = [
    Endpoint("project-detail", "get", lambda w: f"{p(w)}/", ALL, 200),
    Endpoint("project-summary", "get", lambda w: f"{p(w)}/summary/", ALL, 200),
    Endpoint(
        "project-stage", "patch", lambda w: f"{p(w)}/", ADMIN, 200, lambda w: {"stage": "semi"}
    ),
    Endpoint("project-delete", "delete", lambda w: f"{p(w)}/", ADMIN, 200),
    Endpoint("project-embeddings", "post", lambda w: f"{p(w)}/embeddings/", ADMIN, 202),
    Endpoint("project-automatic", "post", lambda w: f"{p(w)}/automatic/", ADMIN, 202),
    Endpoint("project-retrain", "post", lambda w: f"{p(w)}/retrain/", ADMIN, 202),
    Endpoint("project-dashboard", "get", lambda w: f"{p(w)}/dashboard/", ALL, 200),
    Endpoint("members-list", "get", lambda w: f"{p(w)}/members/", ALL, 200),
    Endpoint(
        "members-add",
        "post",
        lambda w: f"{p(w)}/members/",
        ADMIN,
        201,
        lambda w: {"username": "outsider", "role": "annotator"},
    ),
    Endpoint(
        "members-role",
        "patch",
        lambda w: f"{p(w)}/members/{w.project.memberships.get(user__username='annotator').pk}/",
        ADMIN,
        200,
        lambda w: {"role": "reviewer"},
    ),
    Endpoint(
        "members-remove",
        "delete",
        lambda w: f"{p(w)}/members/{w.project.memberships.get(user__username='reviewer').pk}/",
        ADMIN,
        204,
    ),
    Endpoint("categories-list", "get", lambda w: f"{p(w)}/categories/", ALL, 200),
    Endpoint(
        "categories-add",
        "post",
        lambda w: f"{p(w)}/categories/",
        ADMIN,
        201,
        lambda w: {"name": "bird"},
    ),
    Endpoint(
        "categories-rename",
        "patch",
        lambda w: f"{p(w)}/categories/{w.project.categories.get(name='dog').pk}/",
        ADMIN,
        200,
        lambda w: {"name": "puppy"},
    ),
    Endpoint(
        "categories-delete",
        "delete",
        lambda w: f"{p(w)}/categories/{w.project.categories.get(name='dog').pk}/",
        ADMIN,
        204,
    ),
    Endpoint("images-list", "get", lambda w: f"{p(w)}/images/", ALL, 200),
    Endpoint("images-detail", "get", lambda w: f"{p(w)}/images/{w.image.pk}/", ALL, 200),
    Endpoint("images-file", "get", lambda w: f"{p(w)}/images/{w.image.pk}/file/", ALL, 200),
    Endpoint(
        "images-predict",
        "post",
        lambda w: f"{p(w)}/images/{w.image.pk}/predict/",
        ALL,
        200,
        lambda w: {"points": [[20, 15]], "labels": [1]},
    ),
    Endpoint(
        "images-upload",
        "post",
        lambda w: f"{p(w)}/images/",
        ADMIN,
        201,
        lambda w: {"files": [SimpleUploadedFile("new.png", png_bytes(20, 20, seed=9))]},
        multipart=True,
    ),
    Endpoint(
        "images-state",
        "patch",
        lambda w: f"{p(w)}/images/{w.image.pk}/",
        ALL,
        200,
        lambda w: {"state": "skipped"},
    ),
    Endpoint("images-next", "post", lambda w: f"{p(w)}/images/next/", ALL, 200),
    Endpoint("images-lease", "post", lambda w: f"{p(w)}/images/{w.image.pk}/lease/", ALL, 200),
    Endpoint("images-delete", "delete", lambda w: f"{p(w)}/images/{w.image.pk}/", ADMIN, 200),
    Endpoint("masks-list", "get", lambda w: f"{p(w)}/masks/?image={w.image.pk}", ALL, 200),
    Endpoint("masks-detail", "get", lambda w: f"{p(w)}/masks/{w.mask.pk}/", ALL, 200),
    Endpoint(
        "masks-create",
        "post",
        lambda w: f"{p(w)}/masks/",
        ALL,
        201,
        lambda w: {"image": w.image.pk, "segmentation": square_rle(w.image, 20, 10, 5)},
    ),
    Endpoint(
        "masks-edit",
        "patch",
        lambda w: f"{p(w)}/masks/{w.mask.pk}/",
        ALL,
        200,
        lambda w: {"revision": 1, "segmentation": square_rle(w.image, 1, 1, 6)},
    ),
    Endpoint(
        "masks-review",
        "patch",
        lambda w: f"{p(w)}/masks/{w.mask.pk}/",
        {"admin", "reviewer"},
        200,
        lambda w: {"revision": 1, "review_state": "accepted"},
    ),
    Endpoint(
        "masks-delete",
        "delete",
        lambda w: f"{p(w)}/masks/{w.mask.pk}/",
        {"admin", "annotator"},
        204,
    ),
    Endpoint("prompt-logs-list", "get", lambda w: f"{p(w)}/prompt-logs/", ALL, 200),
    Endpoint(
        "prompt-logs-add",
        "post",
        lambda w: f"{p(w)}/prompt-logs/",
        ALL,
        201,
        lambda w: {
            "image": w.image.pk,
            "session": "0d6c8b8e-8f8e-4d3f-9d55-0d0f4cf1d2a2",
            "kind": "point",
            "data": {"x": 1, "y": 2, "label": 0},
        },
    ),
    Endpoint("jobs-list", "get", lambda w: f"{p(w)}/jobs/", ALL, 200),
    Endpoint("jobs-detail", "get", lambda w: f"{p(w)}/jobs/{w.job.pk}/", ALL, 200),
    Endpoint("jobs-cancel", "post", lambda w: f"{p(w)}/jobs/{w.job.pk}/cancel/", ADMIN, 200),
    Endpoint("versions-list", "get", lambda w: f"{p(w)}/model-versions/", ALL, 200),
    Endpoint(
        "versions-detail", "get", lambda w: f"{p(w)}/model-versions/{w.version.pk}/", ALL, 200
    ),
    Endpoint(
        "versions-download",
        "get",
        lambda w: f"{p(w)}/model-versions/{w.version.pk}/download/",
        ALL,
        200,
    ),
    Endpoint(
        "versions-promote",
        "post",
        lambda w: f"{p(w)}/model-versions/{w.candidate.pk}/promote/",
        ADMIN,
        200,
    ),
    Endpoint(
        "versions-reject",
        "post",
        lambda w: f"{p(w)}/model-versions/{w.candidate.pk}/reject/",
        ADMIN,
        200,
    ),
]


def an_export(w: World) -> int:
    from engine.exports import make_export

    return make_export(w.project, {"format": "coco", "include_images": False}).pk


def sa1b_shard() -> SimpleUploadedFile:
    import io
    import json
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = json.dumps({"image": {}, "annotations": []}).encode()
        info = tarfile.TarInfo("sa_1.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return SimpleUploadedFile("sa_000000.tar", buffer.getvalue())


REVIEWERS = {"admin", "reviewer"}
ENDPOINTS += [
    Endpoint("exports-list", "get", lambda w: f"{p(w)}/exports/", REVIEWERS, 200),
    Endpoint(
        "exports-create",
        "post",
        lambda w: f"{p(w)}/exports/",
        ADMIN,
        202,
        lambda w: {"format": "coco", "masks_as": "polygons"},
    ),
    Endpoint("exports-detail", "get", lambda w: f"{p(w)}/exports/{an_export(w)}/", REVIEWERS, 200),
    Endpoint(
        "exports-download",
        "get",
        lambda w: f"{p(w)}/exports/{an_export(w)}/download/",
        REVIEWERS,
        200,
    ),
    Endpoint("exports-delete", "delete", lambda w: f"{p(w)}/exports/{an_export(w)}/", ADMIN, 204),
    Endpoint(
        "imports-upload",
        "post",
        lambda w: f"{p(w)}/imports/",
        ADMIN,
        202,
        lambda w: {"format": "sa1b", "file": sa1b_shard()},
        multipart=True,
    ),
    # Nothing model-made to review in this world: 204 for those who may ask.
    Endpoint("review-next", "get", lambda w: f"{p(w)}/review/next/", REVIEWERS, 204),
    Endpoint("review-quality", "get", lambda w: f"{p(w)}/review/quality/", REVIEWERS, 200),
]

ROLES = ["admin", "annotator", "reviewer", "outsider"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_role_matrix(
    endpoint: Endpoint, role: str, users: Any, project_factory: Any, client_for: Any
) -> None:
    world = build_world(users, project_factory)
    client = client_for(users[role])
    before = snapshot()
    body = endpoint.body(world) if endpoint.body else None
    fmt = "multipart" if endpoint.multipart else "json"
    response = getattr(client, endpoint.method)(endpoint.url(world), body, format=fmt)
    if role in endpoint.allowed:
        expected = endpoint.success
    elif role == "outsider":
        expected = 404  # another project's data: not even its existence is told
    else:
        expected = 403
    assert response.status_code == expected, (endpoint.name, role, getattr(response, "data", None))
    if expected >= 400 or endpoint.method == "get":
        assert snapshot() == before, f"{endpoint.name} as {role} changed the database"


def test_anonymous_gets_nothing(users: Any, project_factory: Any, client_for: Any) -> None:
    world = build_world(users, project_factory)
    client = client_for(None)
    before = snapshot()
    for endpoint in ENDPOINTS:
        body = endpoint.body(world) if endpoint.body else None
        fmt = "multipart" if endpoint.multipart else "json"
        response = getattr(client, endpoint.method)(endpoint.url(world), body, format=fmt)
        assert response.status_code in (401, 403), endpoint.name
    assert snapshot() == before


CROSS = [
    ("get", lambda w: f"{p(w)}/images/{w.other_image.pk}/"),
    ("get", lambda w: f"{p(w)}/images/{w.other_image.pk}/file/"),
    ("delete", lambda w: f"{p(w)}/images/{w.other_image.pk}/"),
    ("get", lambda w: f"{p(w)}/masks/{w.other_mask.pk}/"),
    ("patch", lambda w: f"{p(w)}/masks/{w.other_mask.pk}/"),
    ("delete", lambda w: f"{p(w)}/masks/{w.other_mask.pk}/"),
]


@pytest.mark.parametrize("method,url", CROSS)
def test_other_projects_objects_through_own_project_are_404(
    method: str, url: Callable[[World], str], users: Any, project_factory: Any, client_for: Any
) -> None:
    """An admin of the target project cannot reach the other project's objects by id."""
    world = build_world(users, project_factory)
    before = snapshot()
    response = getattr(client_for(users["admin"]), method)(
        url(world), {"revision": 1}, format="json"
    )
    assert response.status_code == 404
    assert snapshot() == before


def test_other_projects_image_cannot_get_a_mask(
    users: Any, project_factory: Any, client_for: Any
) -> None:
    world = build_world(users, project_factory)
    before = snapshot()
    response = client_for(users["admin"]).post(
        f"{p(world)}/masks/",
        {"image": world.other_image.pk, "segmentation": square_rle(world.other_image)},
        format="json",
    )
    assert response.status_code == 400
    assert snapshot() == before


def test_project_list_shows_only_own_projects(
    users: Any, project_factory: Any, client_for: Any
) -> None:
    world = build_world(users, project_factory)
    names = {
        row["name"] for row in client_for(users["outsider"]).get("/api/projects/").data["results"]
    }
    assert names == {world.other.name}
    names = {
        row["name"] for row in client_for(users["annotator"]).get("/api/projects/").data["results"]
    }
    assert names == {world.project.name}

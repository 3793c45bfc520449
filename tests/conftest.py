from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

# The suite shares the machine with the servers and workers it starts: two intra-op threads
# stall at every OpenMP barrier while another process holds a core (measured 10-20x slower on
# 2 cores); one thread stays steady.
torch.set_num_threads(int(os.environ.get("MASKLOOP_TEST_TORCH_THREADS", "1")))

SHARED_DATA = Path(
    os.environ.get(
        "MASKLOOP_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)


@pytest.fixture(autouse=True)
def _django_test_settings(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Every test stores its files in its own folder; passwords hash fast."""
    if "settings" in request.fixturenames or request.node.get_closest_marker("django_db"):
        settings = request.getfixturevalue("settings")
        settings.MEDIA_ROOT = tmp_path / "media"
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
        # Projects start with GrabCut unless a test ships them a starter model itself.
        settings.MASKLOOP_STARTER_CHECKPOINT = "none"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data folder {SHARED_DATA} is absent (set MASKLOOP_SHARED_DATA)")
    return SHARED_DATA


def png_bytes(width: int = 64, height: int = 48, seed: int = 0, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    image = PILImage.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def make_png() -> Callable[..., bytes]:
    return png_bytes


@pytest.fixture
def users(django_user_model: Any) -> dict[str, Any]:
    """One user per role, plus an outsider who belongs to no project."""
    return {
        name: django_user_model.objects.create_user(username=name, password="pw-" + name)
        for name in ("admin", "annotator", "reviewer", "outsider")
    }


@pytest.fixture
def project_factory(users: dict[str, Any]) -> Callable[..., Any]:
    from annotator.models import Membership, Role
    from engine.projects import create_project

    def make(name: str = "P", with_members: bool = True) -> Any:
        project = create_project(name, owner=users["admin"], categories=["cat", "dog"])
        if with_members:
            Membership.objects.create(project=project, user=users["annotator"], role=Role.ANNOTATOR)
            Membership.objects.create(project=project, user=users["reviewer"], role=Role.REVIEWER)
        return project

    return make


@pytest.fixture
def client_for() -> Callable[[Any], Any]:
    from rest_framework.test import APIClient

    def make(user: Any) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def project_with_two_annotators(
    project_factory: Callable[..., Any], users: dict[str, Any], django_user_model: Any
) -> Callable[[int], Any]:
    """A project whose annotators are ``annotator`` and ``second``, with N images."""
    from annotator.models import Membership, Role
    from engine import images

    def make(image_count: int) -> Any:
        project = project_factory()
        users["second"] = django_user_model.objects.create_user(username="second", password="x")
        Membership.objects.create(project=project, user=users["second"], role=Role.ANNOTATOR)
        for seed in range(image_count):
            images.store(project, images.prepare(png_bytes(seed=seed), f"{seed}.png"))
        return project

    return make

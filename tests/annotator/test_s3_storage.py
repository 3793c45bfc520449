"""S3-compatible storage (django-storages + boto3) against a real S3-protocol server that the
test starts: moto in server mode on 127.0.0.1. Images, checkpoints and embeddings go to the
bucket and come back through the API and the engine; nothing touches the local media folder."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image as PILImage

from engine import embeddings
from tests.annotator.test_annotate import promote_tiny_sam
from tests.conftest import png_bytes

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "maskloop-test"
KEYS = {"AWS_ACCESS_KEY_ID": "maskloop-test-key", "AWS_SECRET_ACCESS_KEY": "maskloop-test-secret"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_server: str, settings: Any, tmp_path: Path) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=BUCKET)
    settings.MEDIA_ROOT = tmp_path / "must-stay-empty"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": s3_storage_settings(s3_server)["default"],
    }
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def s3_storage_settings(endpoint: str) -> dict[str, Any]:
    """STORAGES as annotator/settings.py builds it from the environment."""
    env = {
        **os.environ,
        **KEYS,
        "MASKLOOP_S3_BUCKET": BUCKET,
        "MASKLOOP_S3_PREFIX": "media",
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_S3_REGION_NAME": "us-east-1",
    }
    script = "import json; from django.conf import settings; print(json.dumps(settings.STORAGES))"
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def keys(client: Any) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


@pytest.mark.django_db(transaction=True)
def test_images_checkpoints_and_embeddings_live_in_the_bucket(
    bucket: Any, users: Any, project_factory: Any, tmp_path: Path
) -> None:
    from django.conf import settings

    assert settings.STORAGES["default"]["BACKEND"] == "storages.backends.s3.S3Storage"
    assert settings.STORAGES["default"]["OPTIONS"]["addressing_style"] == "path"
    project = project_factory()
    client = Client()
    client.force_login(users["admin"])
    data = png_bytes(40, 30, seed=5)
    response = client.post(
        f"/api/projects/{project.pk}/images/",
        {"files": [SimpleUploadedFile("photo.png", data)]},
    )
    assert response.status_code == 201, response.content
    stored = keys(bucket)
    assert len(stored) == 1 and stored[0].startswith("media/")

    row = response.json()["created"][0]
    served = client.get(row["file_url"])
    assert served.status_code == 200
    pixels = np.asarray(PILImage.open(io.BytesIO(b"".join(served.streaming_content))))
    assert np.array_equal(pixels, np.asarray(PILImage.open(io.BytesIO(data))))

    version = promote_tiny_sam(project)  # the checkpoint goes to the bucket too
    image = project.images.get()
    assert embeddings.compute(image, version)
    assert embeddings.has_embedding(image, version)
    embeddings.memory.clear()
    loaded = embeddings.ready_predictor(image, version)  # read back from the bucket
    assert loaded.source == "disk"
    names = keys(bucket)
    assert any(name.endswith(".pth") for name in names)
    assert any(name.startswith(f"media/embeddings/v{version.pk}/") for name in names)
    assert not (tmp_path / "must-stay-empty").exists()

    ready = Client().get("/readyz").json()
    assert ready["checks"]["storage"] == {**ready["checks"]["storage"], "ok": True}
    assert ready["checks"]["storage"]["detail"] == "S3Storage"


@pytest.mark.django_db
def test_readyz_names_a_bucket_it_cannot_reach(s3_server: str, settings: Any) -> None:
    options = dict(s3_storage_settings(s3_server)["default"]["OPTIONS"])
    options["bucket_name"] = "no-such-bucket"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options},
    }
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["storage"]

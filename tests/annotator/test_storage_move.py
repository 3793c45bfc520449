"""Moving a platform (DECISIONS 20): its files from local disk to S3 and back
(``sync_storage``, against moto's S3 server), and its database from SQLite to a fresh
PostgreSQL database (``move_database``, on the machine's PostgreSQL). After each move the
platform reads back what it had: the same pixels, embeddings, checkpoints, rows and API
answers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from PIL import Image as PILImage

from annotator.management.commands.sync_storage import walk
from annotator.models import Export
from engine import embeddings
from tests.annotator.test_annotate import promote_tiny_sam
from tests.annotator.test_s3_storage import (  # noqa: F401 (s3_server: a fixture)
    BUCKET,
    KEYS,
    keys,
    s3_server,
    s3_storage_settings,
)
from tests.conftest import png_bytes
from tests.model.test_train import make_shapes_set
from tests.served import ROOT, SERVICE_VARIABLES
from tests.services import missing, reachable

LOCAL_STORAGE = {"BACKEND": "django.core.files.storage.FileSystemStorage"}

# --------------------------------------------------------------------------- files


@pytest.fixture
def empty_bucket(s3_server: str) -> Iterator[Any]:  # noqa: F811
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=BUCKET)
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def sync(*args: str) -> str:
    out = StringIO()
    call_command("sync_storage", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def pixels_via_api(client: Client, url: str) -> np.ndarray:
    response = client.get(url)
    assert response.status_code == 200
    return np.asarray(PILImage.open(io.BytesIO(b"".join(response.streaming_content))))


@pytest.mark.django_db(transaction=True)
def test_files_move_to_s3_and_back_and_read_the_same(
    empty_bucket: Any,
    s3_server: str,  # noqa: F811
    settings: Any,
    users: Any,
    project_factory: Any,
    tmp_path: Path,
) -> None:
    # A platform on local files: an image, a model checkpoint, an embedding and an export.
    media = tmp_path / "media"
    settings.MEDIA_ROOT = media
    settings.STORAGES = {**settings.STORAGES, "default": LOCAL_STORAGE}
    project = project_factory()
    client = Client()
    client.force_login(users["admin"])
    data = png_bytes(48, 36, seed=7)
    response = client.post(
        f"/api/projects/{project.pk}/images/", {"files": [SimpleUploadedFile("p.png", data)]}
    )
    assert response.status_code == 201, response.content
    file_url = response.json()["created"][0]["file_url"]
    version = promote_tiny_sam(project)
    image = project.images.get()
    assert embeddings.compute(image, version)
    export = Export(project=project, format="coco", expires_at=timezone.now() + timedelta(days=1))
    export.file.save("coco.zip", ContentFile(b"an export"), save=True)
    local = {name: (media / name).read_bytes() for name in walk_local(media)}
    assert len(local) == 4

    # The bucket's settings in place, MEDIA_ROOT still the local folder.
    settings.STORAGES = {**settings.STORAGES, "default": s3_storage_settings(s3_server)["default"]}
    out = sync("--to", "s3", "--dry-run")
    assert "would copy 4 new and 0 changed files" in out
    assert keys(empty_bucket) == []

    out = sync("--to", "s3")
    assert "copied 4 new and 0 changed files" in out
    assert "every file the database names is there" in out
    assert keys(empty_bucket) == sorted(f"media/{name}" for name in local)
    # Idempotent: a second run copies nothing; a changed file alone is copied again.
    assert "copied 0 new and 0 changed files (0.0 MB); 4 already identical" in sync("--to", "s3")
    (media / export.file.name).write_bytes(b"a newer export")
    assert "copied 0 new and 1 changed files" in sync("--to", "s3")
    local[export.file.name] = b"a newer export"

    # The platform on S3 alone (the local folder gone) reads back the same.
    media.rename(tmp_path / "old-media")
    assert np.array_equal(
        pixels_via_api(client, file_url), np.asarray(PILImage.open(io.BytesIO(data)))
    )
    embeddings.memory.clear()
    assert embeddings.ready_predictor(image, version).source == "disk"  # from the bucket
    version.refresh_from_db()
    with version.checkpoint.open("rb") as handle:
        assert handle.read() == local[version.checkpoint.name]

    # Back to local files, into a fresh folder.
    back = tmp_path / "media-back"
    settings.MEDIA_ROOT = back
    assert "copied 4 new and 0 changed files" in sync("--to", "local")
    assert {name: (back / name).read_bytes() for name in walk_local(back)} == local
    settings.STORAGES = {**settings.STORAGES, "default": LOCAL_STORAGE}
    assert np.array_equal(
        pixels_via_api(client, file_url), np.asarray(PILImage.open(io.BytesIO(data)))
    )

    # A file the database names but the source lacks fails the sync, by name.
    settings.STORAGES = {**settings.STORAGES, "default": s3_storage_settings(s3_server)["default"]}
    empty_bucket.delete_object(Bucket=BUCKET, Key=f"media/{export.file.name}")
    settings.MEDIA_ROOT = tmp_path / "media-third"
    errors = StringIO()
    with pytest.raises(CommandError, match="1 files named by the database are missing"):
        call_command("sync_storage", "--to", "local", stdout=StringIO(), stderr=errors)
    assert f"missing: {export.file.name}" in errors.getvalue()


def walk_local(folder: Path) -> list[str]:
    from django.core.files.storage import FileSystemStorage

    return list(walk(FileSystemStorage(location=folder)))


@pytest.mark.django_db
def test_sync_storage_needs_a_bucket(settings: Any) -> None:
    settings.STORAGES = {**settings.STORAGES, "default": LOCAL_STORAGE}
    with pytest.raises(CommandError, match="no S3 storage is configured"):
        sync("--to", "s3")


# --------------------------------------------------------------------------- database

#: Run in ``manage.py shell`` against either database: every table's rows (as Django
#: serialises them, by primary key) and a few API answers, as JSON. It writes nothing.
READ_BACK = """
import json
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core import serializers
from rest_framework.test import APIClient

rows = {}
for model in apps.get_models(include_auto_created=True):
    if model._meta.managed and not model._meta.proxy:
        queryset = model._base_manager.order_by("pk")
        rows[model._meta.label] = json.loads(serializers.serialize("json", queryset))
client = APIClient(HTTP_HOST="127.0.0.1")  # force_authenticate: no login written
client.force_authenticate(get_user_model().objects.get(username="admin"))
api = {}
for path in ["/api/projects/", "/api/projects/1/images/?page_size=100",
             "/api/projects/1/masks/?page_size=500", "/api/projects/1/categories/"]:
    answer = client.get(path)
    api[path] = [answer.status_code, answer.json()]
print(json.dumps({"rows": rows, "api": api}))
"""


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def postgres_server() -> str:
    """The PostgreSQL server the move goes to (trust auth as postgres on this machine)."""
    url = os.environ.get("MASKLOOP_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")
    if not reachable(url, 5432):
        missing("PostgreSQL", "install and start it: apt-get install postgresql")
    return url


@pytest.fixture
def fresh_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database on the machine's server; dropped afterwards."""
    import psycopg

    server = postgres_server()
    name = f"maskloop_move_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_sqlite_platform_moves_into_a_fresh_postgresql_and_reads_back_the_same(
    fresh_postgres: str, tmp_path: Path
) -> None:
    # A platform on its embedded SQLite: the demo project, with masks imported from COCO.
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update({"MASKLOOP_DATA_DIR": str(tmp_path / "data"), "MASKLOOP_STARTER_CHECKPOINT": "none"})
    manage(env, "migrate", "--no-input", "-v", "0")
    manage(env, "setup_demo")
    shapes = make_shapes_set(tmp_path / "coco", n_images=6)
    assert "masks imported" in manage(env, "import_coco", "1", str(shapes))
    before = json.loads(manage(env, "shell", "-c", READ_BACK).splitlines()[-1])
    assert len(before["rows"]["annotator.Mask"]) >= 6
    assert len(before["rows"]["annotator.Image"]) >= 6
    assert all(status == 200 for status, _ in before["api"].values()), before["api"]

    out = manage(env, "move_database", fresh_postgres)
    assert "every table's row count matches" in out

    on_postgres = {**env, "DATABASE_URL": fresh_postgres}
    after = json.loads(manage(on_postgres, "shell", "-c", READ_BACK).splitlines()[-1])
    # Every row of every table, ids, timestamps and RLE counts included; the same API answers.
    assert after["rows"].keys() == before["rows"].keys()
    for label, rows in before["rows"].items():
        assert after["rows"][label] == rows, label
    assert after["api"] == before["api"]
    # New rows continue after the copied ids.
    created = manage(
        on_postgres,
        "shell",
        "-c",
        "from annotator.models import Project; from django.contrib.auth import get_user_model;"
        "from engine.projects import create_project;"
        "u = get_user_model().objects.get(username='admin');"
        "print(create_project('After the move', owner=u, categories=['x']).pk)",
    )
    assert int(created.split()[-1]) > max(p["pk"] for p in before["rows"]["annotator.Project"])

    # A second move into the same (now full) database is refused, and changes nothing.
    refused = subprocess.run(
        [sys.executable, "manage.py", "move_database", fresh_postgres],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0 and "already holds data" in refused.stderr

"""The README's first command, end to end on the embedded defaults: the demo admin logs in,
sees the demo project with its photos, and a job runs on the embedded Celery worker."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image as PILImage

from tests.conftest import png_bytes
from tests.served import serve_platform, token


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


@pytest.mark.slow
def test_the_demo_platform_serves_and_runs_jobs(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for seed in range(3):
        (incoming / f"photo{seed}.png").write_bytes(png_bytes(32, 24, seed=seed))
    with serve_platform(tmp_path / "data", {"IMPORT_ROOTS": str(tmp_path)}) as served:
        key = token(served)
        projects = served.request("/api/projects/", token=key)["results"]
        assert [p["name"] for p in projects] == ["Demo: scikit-image photos"]
        demo = projects[0]
        assert demo["image_count"] >= 6
        images = served.request(f"/api/projects/{demo['id']}/images/", token=key)["results"]
        names = {row["file_name"] for row in images}
        assert {"astronaut.png", "coffee.png", "chelsea.png", "rocket.png"} <= names
        pixels = served.request(images[0]["file_url"], token=key)
        assert PILImage.open(io.BytesIO(pixels)).size == (images[0]["width"], images[0]["height"])

        job = served.request(
            f"/api/projects/{demo['id']}/images/import-folder/",
            token=key,
            data={"folder": str(incoming)},
        )
        deadline = time.monotonic() + 60
        while job["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = served.request(f"/api/projects/{demo['id']}/jobs/{job['id']}/", token=key)
        assert job["state"] == "succeeded", (job, served.log.read_text()[-3000:])
        assert job["result"]["created"] == 3
        assert (served.data_dir / "maskloop.sqlite3").exists()  # SQLite: nothing to install
        helpers = children(served.process.pid)
        assert len(helpers) == 2  # daphne and the embedded Celery worker
    for pid in helpers:
        deadline = time.monotonic() + 20
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(pid), "stopping the server must stop the worker too"

"""Uploading images: many at once, normalisation, and every bad input refused cleanly."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from annotator.models import Image
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db


def upload(client: Any, project: Any, *files: tuple[str, bytes]) -> Any:
    return client.post(
        f"/api/projects/{project.pk}/images/",
        {"files": [SimpleUploadedFile(name, data) for name, data in files]},
        format="multipart",
    )


def encoded(image: PILImage.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file that claims a huge size: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def stored_files(settings: Any) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.fixture
def admin_client(users: Any, client_for: Any) -> Any:
    return client_for(users["admin"])


def test_it_uploads_many_images_at_once(admin_client: Any, project_factory: Any) -> None:
    project = project_factory()
    response = upload(
        admin_client, project, *[(f"img{i}.png", png_bytes(30 + i, 20, seed=i)) for i in range(5)]
    )
    assert response.status_code == 201, response.data
    assert len(response.data["created"]) == 5
    assert response.data["duplicates"] == []
    widths = sorted(row["width"] for row in response.data["created"])
    assert widths == [30, 31, 32, 33, 34]
    served = admin_client.get(response.data["created"][0]["file_url"])
    assert served.status_code == 200
    assert PILImage.open(io.BytesIO(b"".join(served.streaming_content))).size[1] == 20


def test_it_refuses_a_non_image_and_stores_nothing(
    admin_client: Any, project_factory: Any, settings: Any
) -> None:
    project = project_factory()
    response = upload(admin_client, project, ("notes.png", b"this is not an image at all"))
    assert response.status_code == 400
    assert response.data["error"] == "invalid_image"
    assert "notes.png" in response.data["detail"]
    assert Image.objects.count() == 0
    assert stored_files(settings) == []


def test_it_refuses_a_truncated_image(admin_client: Any, project_factory: Any) -> None:
    project = project_factory()
    data = encoded(
        PILImage.fromarray(
            np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
        ),
        "JPEG",
    )
    response = upload(admin_client, project, ("cut.jpg", data[: len(data) // 2]))
    assert response.status_code == 400
    assert response.data["error"] == "invalid_image"
    assert Image.objects.count() == 0


def test_it_refuses_a_decompression_bomb_before_decoding(
    admin_client: Any, project_factory: Any, settings: Any
) -> None:
    project = project_factory()
    bomb = png_header_only(20000, 20000)  # 400 megapixels in a few bytes
    assert len(bomb) < 200
    response = upload(admin_client, project, ("bomb.png", bomb))
    assert response.status_code == 413
    assert response.data["error"] == "image_too_large"
    assert "400000000 pixels" in response.data["detail"]
    assert Image.objects.count() == 0
    assert stored_files(settings) == []


def test_the_pixel_limit_is_configurable(
    admin_client: Any, project_factory: Any, settings: Any
) -> None:
    settings.MASKLOOP_MAX_IMAGE_PIXELS = 1000
    project = project_factory()
    response = upload(admin_client, project, ("big.png", png_bytes(40, 30)))
    assert response.status_code == 413


def test_it_refuses_an_unsupported_format(admin_client: Any, project_factory: Any) -> None:
    project = project_factory()
    ppm = encoded(PILImage.new("RGB", (10, 10), (200, 0, 0)), "PPM")
    response = upload(admin_client, project, ("red.ppm", ppm))
    assert response.status_code == 415
    assert response.data["error"] == "unsupported_format"
    assert Image.objects.count() == 0


def test_one_bad_file_refuses_the_whole_upload(
    admin_client: Any, project_factory: Any, settings: Any
) -> None:
    project = project_factory()
    response = upload(
        admin_client,
        project,
        ("a.png", png_bytes(seed=1)),
        ("broken.png", b"\x89PNG\r\n\x1a\nxx"),
        ("c.png", png_bytes(seed=3)),
    )
    assert response.status_code == 400
    assert response.data["stored"] == 0
    assert Image.objects.count() == 0
    assert stored_files(settings) == []


def test_a_duplicate_is_reported_not_stored_twice(admin_client: Any, project_factory: Any) -> None:
    project = project_factory()
    assert upload(admin_client, project, ("a.png", png_bytes(seed=1))).status_code == 201
    again = upload(admin_client, project, ("a-copy.png", png_bytes(seed=1)))
    assert again.status_code == 409
    assert again.data["error"] == "duplicate_image"
    assert again.data["duplicates"][0]["file_name"] == "a-copy.png"
    assert Image.objects.count() == 1
    mixed = upload(
        admin_client, project, ("a.png", png_bytes(seed=1)), ("b.png", png_bytes(seed=2))
    )
    assert mixed.status_code == 201
    assert [row["file_name"] for row in mixed.data["created"]] == ["b.png"]
    assert mixed.data["duplicates"][0]["existing_id"] == Image.objects.get(file_name="a.png").pk
    assert Image.objects.count() == 2


def test_the_same_image_may_live_in_two_projects(admin_client: Any, project_factory: Any) -> None:
    first, second = project_factory("one"), project_factory("two")
    assert upload(admin_client, first, ("a.png", png_bytes(seed=1))).status_code == 201
    assert upload(admin_client, second, ("a.png", png_bytes(seed=1))).status_code == 201


def test_exif_orientation_is_applied_once_and_the_original_kept(
    admin_client: Any, project_factory: Any
) -> None:
    project = project_factory()
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # a white band on the left
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    data = encoded(PILImage.fromarray(pixels), "JPEG", exif=exif, quality=95)
    response = upload(admin_client, project, ("phone.jpg", data))
    assert response.status_code == 201
    row = response.data["created"][0]
    assert (row["width"], row["height"]) == (20, 60)
    assert row["has_original"] is True
    shown = PILImage.open(io.BytesIO(b"".join(admin_client.get(row["file_url"]).streaming_content)))
    assert shown.size == (20, 60)
    assert np.asarray(shown.convert("L"))[:10].mean() > 200  # the band is now on top
    original = admin_client.get(row["file_url"] + "?original=1")
    assert b"".join(original.streaming_content) == data


def test_sixteen_bit_and_cmyk_become_8_bit_rgb(admin_client: Any, project_factory: Any) -> None:
    project = project_factory()
    ramp = np.tile(np.linspace(0, 65535, 256), (8, 1)).astype(np.uint16)
    sixteen = encoded(PILImage.fromarray(ramp), "PNG")
    cmyk = encoded(PILImage.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")
    tiff = encoded(PILImage.new("RGB", (12, 10), (0, 0, 255)), "TIFF")
    response = upload(
        admin_client, project, ("ramp.png", sixteen), ("red.jpg", cmyk), ("blue.tif", tiff)
    )
    assert response.status_code == 201, response.data
    rows = {row["file_name"]: row for row in response.data["created"]}
    for name, row in rows.items():
        shown = PILImage.open(
            io.BytesIO(b"".join(admin_client.get(row["file_url"]).streaming_content))
        )
        assert shown.mode == "RGB", name
        assert row["has_original"] is True
        if name == "ramp.png":
            values = np.asarray(shown)[0, :, 0]
            assert values[0] == 0 and values[-1] == 255  # scaled, not clipped to 255 everywhere
            assert len(np.unique(values)) > 200
        if name == "red.jpg":
            assert np.asarray(shown)[..., 0].mean() > 200 and np.asarray(shown)[..., 2].mean() < 60


def test_an_upload_without_files_is_a_clear_400(admin_client: Any, project_factory: Any) -> None:
    project = project_factory()
    response = admin_client.post(f"/api/projects/{project.pk}/images/", {}, format="multipart")
    assert response.status_code == 400
    assert "files" in response.data


def test_deleting_an_image_says_what_went(
    admin_client: Any,
    project_factory: Any,
    settings: Any,
    users: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from engine import masks
    from tests.annotator.fixtures import square_rle

    project = project_factory()
    created = upload(admin_client, project, ("a.png", png_bytes(seed=1))).data["created"][0]
    image = Image.objects.get(pk=created["id"])
    masks.create_mask(image, {"segmentation": square_rle(image)}, user=users["admin"])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.delete(f"/api/projects/{project.pk}/images/{image.pk}/")
    assert response.status_code == 200
    assert response.data["deleted"] == {"images": 1, "masks": 1, "prompt_logs": 0, "files": 1}
    assert stored_files(settings) == []

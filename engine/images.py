"""Image ingestion: check, normalise and store an uploaded or imported image.

Every check runs before anything is stored, so a refused image changes nothing. The pixel
limit is checked from the header, before the pixels are decoded (a 400-megapixel PNG of a few
kilobytes must not take the server's memory).
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from annotator.models import Image, Project
from engine.errors import DuplicateImage, ImageTooLarge, InvalidImage, UnsupportedFormat

SUPPORTED_FORMATS = {"JPEG", "PNG", "TIFF", "WEBP", "BMP", "GIF"}
# Formats a browser shows and the model reads as they are, when already 8-bit RGB upright.
PASSTHROUGH_FORMATS = {"JPEG", "PNG"}


@dataclass(frozen=True)
class PreparedImage:
    """An image that passed every check, ready to store."""

    file_name: str
    sha256: str
    original_bytes: bytes
    original_format: str
    width: int
    height: int
    # None when the original can be served as it is.
    normalized_png: bytes | None


def prepare(data: bytes, file_name: str) -> PreparedImage:
    """Check and normalise image bytes. Raises InvalidImage, UnsupportedFormat or
    ImageTooLarge; never stores anything."""
    if len(data) > settings.MASKLOOP_MAX_IMAGE_BYTES:
        raise ImageTooLarge(
            f"{file_name}: {len(data)} bytes is over the limit of "
            f"{settings.MASKLOOP_MAX_IMAGE_BYTES} bytes",
            file_name=file_name,
        )
    limit = settings.MASKLOOP_MAX_IMAGE_PIXELS
    # Pillow's own bomb guard warns above this and refuses above twice it; ours is the limit.
    PILImage.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            opened = PILImage.open(io.BytesIO(data))
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as bomb:
        # Pillow names the pixel count in its message; no other way to get the header size.
        found = re.search(r"\((\d+) pixels\)", str(bomb))
        raise _too_large(file_name, int(found.group(1)) if found else None, limit) from None
    except UnidentifiedImageError:
        raise InvalidImage(
            f"{file_name}: not an image, or a broken one", file_name=file_name
        ) from None
    except Exception as exc:  # Pillow raises many kinds on corrupt headers
        raise InvalidImage(
            f"{file_name}: cannot read the image ({exc})", file_name=file_name
        ) from None

    with opened:
        image_format = opened.format or ""
        if image_format not in SUPPORTED_FORMATS:
            raise UnsupportedFormat(
                f"{file_name}: format {image_format or 'unknown'} is not supported "
                f"(supported: {', '.join(sorted(SUPPORTED_FORMATS))})",
                file_name=file_name,
            )
        width, height = opened.size
        if width * height > limit:
            raise _too_large(file_name, width * height, limit, f"{width}x{height} pixels")
        if width == 0 or height == 0:
            raise InvalidImage(f"{file_name}: image has no pixels", file_name=file_name)
        try:
            # Decode now: a truncated or corrupt file fails here, not later in a worker.
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            rgb = _to_rgb8(upright)
        except Exception as exc:
            raise InvalidImage(
                f"{file_name}: the image data is broken ({exc})", file_name=file_name
            ) from None

        rotated = upright.size != opened.size or _has_orientation(opened)
        passthrough = (
            image_format in PASSTHROUGH_FORMATS
            and opened.mode == "RGB"
            and not rotated
            and not getattr(opened, "is_animated", False)
        )

    normalized: bytes | None = None
    if not passthrough:
        buffer = io.BytesIO()
        rgb.save(buffer, format="PNG", optimize=False, compress_level=3)
        normalized = buffer.getvalue()

    return PreparedImage(
        file_name=file_name,
        sha256=hashlib.sha256(data).hexdigest(),
        original_bytes=data,
        original_format=image_format,
        width=rgb.width,
        height=rgb.height,
        normalized_png=normalized,
    )


def store(project: Project, prepared: PreparedImage, *, user: Any = None) -> Image:
    """Save a prepared image in the project. Raises DuplicateImage when the project already
    holds the same bytes (by sha256)."""
    existing = Image.objects.filter(project=project, sha256=prepared.sha256).first()
    if existing is not None:
        raise DuplicateImage(
            f"{prepared.file_name}: already in the project as image {existing.pk}",
            file_name=prepared.file_name,
            existing_id=existing.pk,
        )
    image = Image(
        project=project,
        file_name=prepared.file_name,
        sha256=prepared.sha256,
        width=prepared.width,
        height=prepared.height,
        uploaded_by=user if user is not None and getattr(user, "pk", None) else None,
    )
    base_name = _safe_stem(prepared.file_name)
    try:
        with transaction.atomic():
            if prepared.normalized_png is None:
                image.file.save(
                    _safe_name(prepared.file_name), ContentFile(prepared.original_bytes), save=False
                )
            else:
                image.file.save(
                    f"{base_name}.png", ContentFile(prepared.normalized_png), save=False
                )
                image.original.save(
                    _safe_name(prepared.file_name), ContentFile(prepared.original_bytes), save=False
                )
            image.save()
    except IntegrityError:
        # A concurrent upload of the same bytes won the race.
        _delete_files(image)
        raise DuplicateImage(
            f"{prepared.file_name}: already in the project", file_name=prepared.file_name
        ) from None
    except BaseException:
        _delete_files(image)
        raise
    return image


def read_rgb(image: Image) -> np.ndarray:
    """The HxWx3 uint8 RGB pixels the model sees."""
    with image.file.open("rb") as handle, PILImage.open(handle) as opened:
        return np.asarray(opened.convert("RGB"))


def _to_rgb8(image: PILImage.Image) -> PILImage.Image:
    """8-bit RGB for the model; 16-bit and float images scaled, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image).astype(np.float64)
        high = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        gray = np.clip(array / high * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return PILImage.fromarray(gray).convert("RGB")
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        # Transparent pixels shown on white, as a viewer would show them.
        background = PILImage.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def _has_orientation(image: PILImage.Image) -> bool:
    try:
        return image.getexif().get(0x0112, 1) not in (1, None)
    except Exception:
        return False


def _too_large(
    file_name: str, pixels: int | None, limit: int, described: str = ""
) -> ImageTooLarge:
    described = described or (f"{pixels} pixels" if pixels else "too many pixels")
    return ImageTooLarge(
        f"{file_name}: {described} is over the limit of {limit} pixels (MASKLOOP_MAX_IMAGE_PIXELS)",
        file_name=file_name,
    )


def _safe_name(file_name: str) -> str:
    name = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".")
    return cleaned[:120] or "image"


def _safe_stem(file_name: str) -> str:
    return _safe_name(file_name).rsplit(".", 1)[0] or "image"


def _delete_files(image: Image) -> None:
    for field in (image.file, image.original):
        if field and field.name:
            field.storage.delete(field.name)

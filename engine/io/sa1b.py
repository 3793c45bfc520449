"""SA-1B: one JSON per image beside the image file, packed in .tar shards.

Per image::

    {"image": {"image_id", "width", "height", "file_name"},
     "annotations": [{"id", "segmentation": {"size": [h, w], "counts"}, "bbox", "area",
                      "predicted_iou", "stability_score", "crop_box", "point_coords"}]}

Fields we do not know are ``null`` (a mask drawn by a person has no predicted IoU, stability
score or crop box; a mask without prompts has ``point_coords`` null). SA-1B is class-agnostic:
categories are not part of the format and are not exported here (use COCO for them).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from engine.errors import InvalidInput
from engine.io.dataset import Dataset, ImportedImage, ImportedMask


def shard_name(index: int) -> str:
    return f"sa_{index:06d}.tar"


def image_record(
    *, image_id: int, width: int, height: int, file_name: str, masks: list[dict[str, Any]]
) -> dict[str, Any]:
    """The per-image JSON; ``masks`` are rows with the Mask fields used below."""
    return {
        "image": {
            "image_id": image_id,
            "width": width,
            "height": height,
            "file_name": file_name,
        },
        "annotations": [
            {
                "id": m["id"],
                "segmentation": {"size": [height, width], "counts": m["rle_counts"]},
                "bbox": m["bbox"],
                "area": m["area"],
                "predicted_iou": m["predicted_iou"],
                "stability_score": m["stability_score"],
                "crop_box": m["crop_box"],
                "point_coords": m["point_coords"] or None,
            }
            for m in masks
        ],
    }


def add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def read_folder(folder: Path) -> Dataset:
    """Every ``*.json`` SA-1B record under an unpacked folder, with its image beside it."""
    found: list[ImportedImage] = []
    for path in sorted(folder.rglob("*.json")):
        found.append(read_record(path))
    if not found:
        raise InvalidInput("no SA-1B .json records in the import")
    return Dataset(images=found)


def read_record(path: Path) -> ImportedImage:
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path.name} is not valid JSON ({exc})") from None
    image = data.get("image") if isinstance(data, dict) else None
    if not isinstance(image, dict) or not isinstance(data.get("annotations"), list):
        raise InvalidInput(f"{path.name} is not an SA-1B record (needs image and annotations)")
    try:
        file_name = str(image["file_name"])
        width, height = int(image["width"]), int(image["height"])
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(f"{path.name}: image needs file_name, width and height") from None
    clean = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    record = ImportedImage(
        ref=str(image.get("image_id", path.stem)),
        path=path.parent / clean,
        file_name=clean,
        width=width,
        height=height,
    )
    for row in data["annotations"]:
        if not isinstance(row, dict) or "segmentation" not in row:
            raise InvalidInput(f"{path.name}: an annotation has no segmentation")
        ref = str(row.get("id", "?"))
        record.masks.append(
            ImportedMask(
                ref=ref,
                segmentation=row["segmentation"],
                predicted_iou=_number(row.get("predicted_iou"), ref, "predicted_iou"),
                stability_score=_number(row.get("stability_score"), ref, "stability_score"),
                crop_box=_crop_box(row.get("crop_box"), ref),
                point_coords=_points(row.get("point_coords"), ref),
            )
        )
    return record


def _number(value: Any, ref: str, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"annotation {ref}: {name} must be a number or null", annotation=ref)
    return float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _crop_box(value: Any, ref: str) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 4 or not all(map(_is_number, value)):
        raise InvalidInput(
            f"annotation {ref}: crop_box must be [x, y, w, h] or null", annotation=ref
        )
    return [float(v) for v in value]


def _points(value: Any, ref: str) -> list[list[float]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(map(_is_number, p)) for p in value
    ):
        raise InvalidInput(
            f"annotation {ref}: point_coords must be a list of [x, y] or null", annotation=ref
        )
    return [[float(x), float(y)] for x, y in value]

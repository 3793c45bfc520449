"""COCO instances JSON: masks as RLE or polygons out, polygons / RLE / iscrowd in.

Polygons are traced on pixel edges (the iso-line at 0.5 between inside and outside pixel
centres, collinear points removed with shapely) and kept only when pycocotools rasterizes them
back to exactly the stored mask. COCO polygons cannot express holes (pycocotools fills every
ring), so a mask with a hole - or any mask whose polygons would not give back the same pixels -
is written as RLE even when polygons are asked for. Several parts become several polygons of
one annotation. The round trip is thus pixel-identical for every mask.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np
from pycocotools import mask as coco_mask
from shapely.geometry import Polygon
from skimage import measure

from engine import rle
from engine.errors import InvalidInput
from engine.io.dataset import UNCATEGORIZED, Dataset, ImportedImage, ImportedMask


def polygons_to_rle(polygons: Any, *, height: int, width: int) -> rle.Rle:
    """COCO polygons ([[x1, y1, x2, y2, ...], ...]) rasterized as pycocotools does."""
    if not isinstance(polygons, list) or not polygons:
        raise InvalidInput("segmentation polygons must be a non-empty list of [x, y, ...] lists")
    rings: list[list[float]] = []
    for ring in polygons:
        if (
            not isinstance(ring, list)
            or len(ring) < 6
            or len(ring) % 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in ring)
        ):
            raise InvalidInput("each polygon must be a list of at least 3 x, y pairs")
        rings.append([float(v) for v in ring])
    xs = [v for ring in rings for v in ring[0::2]]
    ys = [v for ring in rings for v in ring[1::2]]
    if min(xs) < -1 or min(ys) < -1 or max(xs) > width + 1 or max(ys) > height + 1:
        raise InvalidInput(f"polygon lies outside the image ({width}x{height})")
    encoded = coco_mask.merge(coco_mask.frPyObjects(rings, height, width))
    counts = encoded["counts"]
    return rle.Rle(
        height=height,
        width=width,
        counts=counts.decode("ascii") if isinstance(counts, bytes) else counts,
    )


def mask_to_polygons(mask: np.ndarray) -> list[list[float]] | None:
    """Polygons that pycocotools rasterizes to exactly ``mask``; None when there are none
    (a hole, or a shape the traced outline does not give back pixel for pixel)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    # Trace on the mask's box only (the outline is the same, shifted back below).
    y0, x0 = int(rows[0]), int(cols[0])
    crop = mask[y0 : int(rows[-1]) + 1, x0 : int(cols[-1]) + 1]
    padded = np.pad(crop.astype(np.uint8), 1)
    rings: list[list[float]] = []
    for contour in measure.find_contours(padded, 0.5):
        # find_contours gives (row, col) in the padded pixel-centre grid; COCO polygon space
        # has pixel (x, y) covering [x, x+1] x [y, y+1].
        xy = np.stack([contour[:, 1] - 0.5 + x0, contour[:, 0] - 0.5 + y0], axis=1)
        if len(xy) < 4:
            continue
        shape = Polygon(xy).simplify(0)
        if shape.is_empty or not isinstance(shape, Polygon):
            return None
        coords = np.asarray(shape.exterior.coords)[:-1]
        if len(coords) < 3:
            return None
        rings.append([round(float(v), 2) for v in coords.ravel()])
    if not rings:
        return None
    height, width = mask.shape
    back = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(rings, height, width)))
    if not np.array_equal(back.astype(bool), mask.astype(bool)):
        return None
    return rings


def segmentation_for(counts: str, height: int, width: int, masks_as: str) -> Any:
    """The ``segmentation`` of one exported annotation."""
    stored = rle.Rle(height=height, width=width, counts=counts)
    if masks_as == "polygons":
        polygons = mask_to_polygons(rle.to_mask(stored))
        if polygons is not None:
            return polygons
    return stored.to_coco()


def write(
    handle: IO[str],
    *,
    info: dict[str, Any],
    categories: Iterable[dict[str, Any]],
    images: Iterable[dict[str, Any]],
    annotations: Iterable[dict[str, Any]],
) -> None:
    """Stream a COCO instances file: nothing but the current row is held in memory."""
    handle.write('{"info": ' + json.dumps(info) + ', "licenses": [], "categories": ')
    handle.write(json.dumps(list(categories)))
    handle.write(', "images": [')
    _write_rows(handle, images)
    handle.write('], "annotations": [')
    _write_rows(handle, annotations)
    handle.write("]}\n")


def _write_rows(handle: IO[str], rows: Iterable[dict[str, Any]]) -> None:
    first = True
    for row in rows:
        if not first:
            handle.write(", ")
        handle.write(json.dumps(row, separators=(",", ":")))
        first = False


def find_annotation_file(folder: Path) -> Path:
    """The COCO JSON of an unpacked import: annotations.json, or the only .json file."""
    candidates = sorted(p for p in folder.rglob("*.json") if p.is_file())
    named = [p for p in candidates if p.name in ("annotations.json", "instances.json")]
    if named:
        return named[0]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise InvalidInput("no COCO .json file in the import")
    raise InvalidInput(
        "several .json files in the import; name the COCO file annotations.json",
        files=[str(p.relative_to(folder)) for p in candidates[:20]],
    )


def read(path: Path, *, images_folder: Path | None = None) -> Dataset:
    """Parse a COCO instances file; image files are looked up relative to ``images_folder``
    (default: the JSON's folder), by ``file_name`` and then by its base name under
    ``images/``."""
    try:
        with path.open("rb") as handle:
            data = json.load(handle)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path.name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InvalidInput(f"{path.name} is not a COCO instances file (no 'images' list)")
    base = images_folder or path.parent
    categories: dict[int, tuple[str, str]] = {}
    for category in data.get("categories") or []:
        try:
            categories[int(category["id"])] = (
                str(category["name"]),
                str(category.get("supercategory") or ""),
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(f"category {category!r} has no id or name") from None
    by_id: dict[Any, ImportedImage] = {}
    for row in data["images"]:
        try:
            image_id, file_name = row["id"], str(row["file_name"])
            width, height = int(row["width"]), int(row["height"])
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(f"image entry {row!r} needs id, file_name, width, height") from None
        if image_id in by_id:
            raise InvalidInput(f"image id {image_id} appears twice")
        by_id[image_id] = ImportedImage(
            ref=str(image_id),
            path=_locate(base, file_name),
            file_name=file_name,
            width=width,
            height=height,
        )
    for row in data.get("annotations") or []:
        ref = str(row.get("id", "?")) if isinstance(row, dict) else "?"
        if not isinstance(row, dict) or row.get("image_id") not in by_id:
            raise InvalidInput(f"annotation {ref} names no image of the file", annotation=ref)
        category_id = row.get("category_id")
        name: str | None = None
        if category_id is not None:
            if category_id not in categories:
                raise InvalidInput(
                    f"annotation {ref} has an unknown category_id {category_id}", annotation=ref
                )
            name = categories[category_id][0]
        if name == UNCATEGORIZED:
            name = None
        if "segmentation" not in row:
            raise InvalidInput(f"annotation {ref} has no segmentation", annotation=ref)
        by_id[row["image_id"]].masks.append(
            ImportedMask(
                ref=ref,
                segmentation=row["segmentation"],
                category=name,
                is_crowd=bool(row.get("iscrowd", 0)),
            )
        )
    names = {n: s for n, s in categories.values() if n != UNCATEGORIZED}
    return Dataset(images=list(by_id.values()), categories=names)


def _locate(base: Path, file_name: str) -> Path:
    clean = file_name.replace("\\", "/").lstrip("/")
    if ".." in clean.split("/"):
        raise InvalidInput(f"image file_name {file_name!r} leaves the import folder")
    for candidate in (base / clean, base / "images" / clean.rsplit("/", 1)[-1]):
        if candidate.is_file():
            return candidate
    return base / clean

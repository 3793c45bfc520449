"""Reading the COCO-format sets under ``../shared/data`` (see its README.md).

Each set is a folder with ``images/`` and ``annotations.json`` (COCO instances: polygons, or RLE
compressed or not); ``splits.json`` beside the sets names each set's validation image ids, and
every other image is training data. Masks are decoded lazily with pycocotools, one at a time,
because a whole set of full-size boolean masks would not fit comfortably in memory.

This module is the plain reader; training-time sampling and augmentation build on
:class:`CocoSet` / :class:`Instance` and belong further down this file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pycocotools import mask as mask_utils

#: Environment variable naming the folder that holds the sets; default ``<project>/../shared/data``.
SHARED_DATA_ENV = "MASKLOOP_SHARED_DATA"

Split = Literal["val", "train", "all"]


def shared_data_root() -> Path:
    """The folder holding the shared sets: ``$MASKLOOP_SHARED_DATA`` or ``<project>/../shared/data``.

    The folder may not exist (e.g. on CI); callers check and skip.
    """
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        return Path(env)
    project_root = Path(__file__).resolve().parents[2]
    return project_root.parent / "shared" / "data"


@dataclass(frozen=True)
class CocoImage:
    """One image entry: ``path`` is absolute, ``width`` x ``height`` as the JSON says."""

    id: int
    file_name: str
    path: Path
    width: int
    height: int

    def load(self) -> np.ndarray:
        """Read the image as HxWx3 uint8 RGB (EXIF orientation applied by OpenCV)."""
        bgr = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {self.path}")
        if bgr.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"{self.path}: image is {bgr.shape[1]}x{bgr.shape[0]} but the annotations say "
                f"{self.width}x{self.height}"
            )
        return np.ascontiguousarray(bgr[:, :, ::-1])


@dataclass(frozen=True)
class CocoAnnotation:
    """One instance annotation; ``segmentation`` is kept as in the JSON until decoded.

    ``bbox`` is COCO's (x, y, w, h) in pixels.
    """

    id: int
    image_id: int
    category_id: int
    segmentation: list[list[float]] | dict[str, Any]
    area: float
    bbox: tuple[float, float, float, float]
    iscrowd: bool

    def decode(self, height: int, width: int) -> np.ndarray:
        """The mask as HxW bool (polygons, compressed RLE and uncompressed RLE)."""
        return decode_segmentation(self.segmentation, height, width)


def decode_segmentation(
    segmentation: Sequence[Sequence[float]] | Mapping[str, Any], height: int, width: int
) -> np.ndarray:
    """Decode a COCO segmentation to an HxW bool mask.

    Arguments:
        segmentation: a list of polygons ``[[x0, y0, x1, y1, ...], ...]``, an uncompressed RLE
            ``{"size": [H, W], "counts": [int, ...]}`` or a compressed one (``counts`` str or
            bytes).
        height, width: the image size; an RLE of another size is an error.
    """
    if isinstance(segmentation, Sequence) and not isinstance(segmentation, str | bytes):
        # pycocotools reads a 4-number "polygon" as a box and cannot rasterise fewer than
        # 3 points, so degenerate rings are dropped rather than misread.
        polygons = [list(map(float, p)) for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, Mapping):
        size = [int(s) for s in segmentation["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} differs from the image size {[height, width]}")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
        else:
            if isinstance(counts, str):
                counts = counts.encode("ascii")
            rle = {"size": size, "counts": counts}
    else:
        raise TypeError(f"unknown segmentation type {type(segmentation).__name__}")
    return mask_utils.decode(rle).astype(bool)


@dataclass(frozen=True)
class Instance:
    """One annotated object of one image of one set, the unit of training and evaluation."""

    set_name: str
    image: CocoImage
    annotation: CocoAnnotation

    def mask(self) -> np.ndarray:
        """HxW bool ground-truth mask."""
        return self.annotation.decode(self.image.height, self.image.width)

    def load_image(self) -> np.ndarray:
        """HxWx3 uint8 RGB."""
        return self.image.load()


@dataclass
class CocoSet:
    """A set read from ``<folder>/annotations.json``.

    ``val_ids`` are the validation image ids from splits.json, or None when unknown (then
    only ``split="all"`` can be iterated).
    """

    name: str
    root: Path
    images: dict[int, CocoImage]
    annotations: list[CocoAnnotation]
    categories: dict[int, str]
    val_ids: frozenset[int] | None = None
    _by_image: dict[int, list[CocoAnnotation]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        by_image: dict[int, list[CocoAnnotation]] = {image_id: [] for image_id in self.images}
        for ann in self.annotations:
            if ann.image_id not in by_image:
                raise ValueError(
                    f"{self.name}: annotation {ann.id} names unknown image {ann.image_id}"
                )
            by_image[ann.image_id].append(ann)
        self._by_image = by_image

    def annotations_of(self, image_id: int) -> list[CocoAnnotation]:
        """The annotations of one image, in file order."""
        return self._by_image[image_id]

    def image_ids(self, split: Split = "all") -> list[int]:
        """Sorted image ids of a split: ``val`` from splits.json, ``train`` the rest."""
        ids = sorted(self.images)
        if split == "all":
            return ids
        if self.val_ids is None:
            raise ValueError(f"{self.name}: no validation ids known (splits.json missing?)")
        if split == "val":
            return [i for i in ids if i in self.val_ids]
        if split == "train":
            return [i for i in ids if i not in self.val_ids]
        raise ValueError(f"unknown split {split!r}; expected 'val', 'train' or 'all'")


def load_splits(shared_root: Path | str) -> dict[str, frozenset[int]]:
    """Read ``<shared_root>/splits.json``: set name -> validation image ids.

    The file maps each set to ``{"val": [image ids]}``; training is every other image.
    """
    with open(Path(shared_root) / "splits.json", encoding="utf-8") as f:
        raw: Mapping[str, Mapping[str, list[int]]] = json.load(f)
    return {name: frozenset(int(i) for i in entry["val"]) for name, entry in raw.items()}


def load_coco_set(folder: Path | str, *, val_ids: frozenset[int] | None = None) -> CocoSet:
    """Read one set folder.

    Arguments:
        folder: holds ``annotations.json``; ``file_name`` entries are relative to it.
        val_ids: validation image ids; by default taken from ``<folder>/../splits.json`` under
            the folder's name when that file exists.
    """
    root = Path(folder).resolve()
    with open(root / "annotations.json", encoding="utf-8") as f:
        raw = json.load(f)
    images = {
        int(im["id"]): CocoImage(
            id=int(im["id"]),
            file_name=str(im["file_name"]),
            path=root / str(im["file_name"]),
            width=int(im["width"]),
            height=int(im["height"]),
        )
        for im in raw["images"]
    }
    annotations = [
        CocoAnnotation(
            id=int(a["id"]),
            image_id=int(a["image_id"]),
            category_id=int(a["category_id"]),
            segmentation=a["segmentation"],
            area=float(a.get("area", 0.0)),
            bbox=_bbox(a.get("bbox")),
            iscrowd=bool(a.get("iscrowd", 0)),
        )
        for a in raw["annotations"]
    ]
    categories = {int(c["id"]): str(c["name"]) for c in raw.get("categories", [])}
    if val_ids is None and (root.parent / "splits.json").is_file():
        val_ids = load_splits(root.parent).get(root.name)
    return CocoSet(
        name=root.name,
        root=root,
        images=images,
        annotations=annotations,
        categories=categories,
        val_ids=val_ids,
    )


def iter_instances(
    coco_set: CocoSet,
    split: Split = "val",
    *,
    min_area: float = 0.0,
    include_crowd: bool = False,
    limit_images: int | None = None,
    skip_images: int = 0,
) -> Iterator[Instance]:
    """Yield the instances of a split, image by image (sorted ids), in file order within one.

    Arguments:
        split: ``"val"``, ``"train"`` or ``"all"``.
        min_area: skip instances whose annotated ``area`` is below this (pixels).
        include_crowd: COCO ``iscrowd`` regions are not objects and are skipped by default.
        limit_images: stop after this many images of the split (those with no kept instance
            count too, so the subset is the same whatever ``min_area`` is).
        skip_images: leave out this many first images of the split (before ``limit_images``
            applies): e.g. images 41 to 69 of a split whose first 40 were measured already.
    """
    image_ids = coco_set.image_ids(split)[skip_images:]
    if limit_images is not None:
        image_ids = image_ids[:limit_images]
    for image_id in image_ids:
        image = coco_set.images[image_id]
        for ann in coco_set.annotations_of(image_id):
            if ann.iscrowd and not include_crowd:
                continue
            if ann.area < min_area:
                continue
            yield Instance(set_name=coco_set.name, image=image, annotation=ann)


def _bbox(value: Any) -> tuple[float, float, float, float]:
    """COCO bbox (x, y, w, h) as floats; zeros when absent."""
    if not value:
        return (0.0, 0.0, 0.0, 0.0)
    x, y, w, h = (float(v) for v in value)
    return (x, y, w, h)

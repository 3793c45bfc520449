"""SA-1B export: exact per-image JSON in .tar shards, every RLE decodes to the stored mask;
import of shards gives the same masks back."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from annotator.models import Image, Mask, MaskSource
from engine import exports, images, masks, rle
from engine.errors import InvalidInput
from engine.io.imports import import_path
from tests.conftest import png_bytes
from tests.engine.test_io_coco import ring_with_hole, stored_masks, two_parts

pytestmark = pytest.mark.django_db

ANNOTATION_KEYS = {
    "id",
    "segmentation",
    "bbox",
    "area",
    "predicted_iou",
    "stability_score",
    "crop_box",
    "point_coords",
}


def project_with_masks(project_factory: Any, users: Any, count: int = 3) -> Any:
    project = project_factory("SA")
    for seed in range(count):
        image = images.store(project, images.prepare(png_bytes(64, 48, seed=seed), f"i{seed}.png"))
        masks.create_mask(
            image,
            {"segmentation": rle.from_mask(ring_with_hole()).to_coco()},
            user=users["annotator"],
        )
        masks.create_mask(
            image,
            {
                "segmentation": rle.from_mask(two_parts()).to_coco(),
                "predicted_iou": 0.91,
                "stability_score": 0.97,
                "point_coords": [[10.0, 12.0]],
                "crop_box": [0, 0, 64, 48],
            },
            user=None,
        )
    return project


def read_shards(export: Any) -> dict[str, dict[str, bytes]]:
    shards: dict[str, dict[str, bytes]] = {}
    with export.file.open("rb") as handle, tarfile.open(fileobj=io.BytesIO(handle.read())) as outer:
        for member in outer.getmembers():
            data = outer.extractfile(member)
            assert data is not None
            with tarfile.open(fileobj=io.BytesIO(data.read())) as shard:
                shards[member.name] = {
                    m.name: shard.extractfile(m).read()  # type: ignore[union-attr]
                    for m in shard.getmembers()
                }
    return shards


def test_shards_hold_images_and_exact_records(
    project_factory: Any, users: Any, tmp_path: Path
) -> None:
    project = project_with_masks(project_factory, users)
    export = exports.make_export(project, {"format": "sa1b", "shard_size": 2})
    shards = read_shards(export)
    assert sorted(shards) == ["sa_000000.tar", "sa_000001.tar"]
    assert [len(s) for s in shards.values()] == [4, 2]
    records = [
        json.loads(data)
        for shard in shards.values()
        for n, data in shard.items()
        if n.endswith(".json")
    ]
    assert len(records) == 3 and export.masks == 6 and export.images == 3
    for record in records:
        assert set(record) == {"image", "annotations"}
        assert set(record["image"]) == {"image_id", "width", "height", "file_name"}
        image = Image.objects.get(pk=record["image"]["image_id"])
        shard = next(s for s in shards.values() if record["image"]["file_name"] in s)
        with image.file.open("rb") as handle:
            assert shard[record["image"]["file_name"]] == handle.read()
        for annotation in record["annotations"]:
            assert set(annotation) == ANNOTATION_KEYS
            assert annotation["segmentation"]["size"] == [48, 64]
            decoded = coco_mask.decode(
                {"size": [48, 64], "counts": annotation["segmentation"]["counts"].encode()}
            ).astype(bool)
            stored = Mask.objects.get(pk=annotation["id"])
            assert np.array_equal(decoded, rle.to_mask(rle.Rle(48, 64, stored.rle_counts)))
            if stored.created_by is not None:  # a person's mask: unknown model fields are null
                assert annotation["predicted_iou"] is None
                assert annotation["stability_score"] is None
                assert annotation["crop_box"] is None and annotation["point_coords"] is None
            else:
                assert annotation["predicted_iou"] == 0.91
                assert annotation["point_coords"] == [[10.0, 12.0]]


def test_round_trip_through_shards(project_factory: Any, users: Any, tmp_path: Path) -> None:
    project = project_with_masks(project_factory, users)
    export = exports.make_export(project, {"format": "sa1b", "shard_size": 2})
    archive = tmp_path / "export.tar"
    with export.file.open("rb") as handle:
        archive.write_bytes(handle.read())
    copy = project_factory("Copy", with_members=False)
    report = import_path(copy, archive, "sa1b")
    assert report.images == 3 and report.masks == 6
    strip = {k: [(a, r) for a, r, _ in v] for k, v in stored_masks(project).items()}
    assert {k: [(a, r) for a, r, _ in v] for k, v in stored_masks(copy).items()} == strip
    imported = Mask.objects.filter(image__project=copy, predicted_iou=0.91)
    assert imported.count() == 3
    assert {m.source_stage for m in Mask.objects.filter(image__project=copy)} == {
        MaskSource.IMPORTED
    }
    # A single shard imports as well.
    with tarfile.open(archive) as outer:
        outer.extract("sa_000001.tar", tmp_path, filter="data")
    third = project_factory("Third", with_members=False)
    assert import_path(third, tmp_path / "sa_000001.tar", "sa1b").images == 1


def test_shard_with_a_mask_too_big_is_refused_whole(project_factory: Any, tmp_path: Path) -> None:
    record = {
        "image": {"image_id": 5, "width": 64, "height": 48, "file_name": "sa_5.png"},
        "annotations": [
            {"id": 11, "segmentation": rle.from_mask(two_parts()).to_coco()},
            {"id": 12, "segmentation": rle.from_mask(np.ones((48, 65), dtype=bool)).to_coco()},
        ],
    }
    shard = tmp_path / "sa_000000.tar"
    with tarfile.open(shard, "w") as archive:
        for name, data in (
            ("sa_5.png", png_bytes(64, 48, seed=5)),
            ("sa_5.json", json.dumps(record).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    project = project_factory("Target", with_members=False)
    with pytest.raises(InvalidInput) as refused:
        import_path(project, shard, "sa1b")
    assert [p.get("annotation") for p in refused.value.detail["problems"]] == ["12"]
    assert not Image.objects.filter(project=project).exists()

"""COCO export and import: pycocotools reads what we write, and the round trip is exact."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from annotator.models import Image, Mask, MaskSource
from engine import exports, images, masks, rle
from engine.errors import InvalidInput
from engine.io import coco
from engine.io.imports import import_path
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db


def ring_with_hole(height: int = 48, width: int = 64) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[5:30, 5:30] = True
    mask[12:20, 12:20] = False  # a hole
    mask[35:45, 40:60] = True  # a second part
    return mask


def two_parts(height: int = 48, width: int = 64) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    yy, xx = np.mgrid[:height, :width]
    mask |= (yy - 15) ** 2 + (xx - 15) ** 2 < 90
    mask[30:44, 35:61] = True
    mask[40, 10:20] = True  # a thin line
    return mask


def synthetic_project(project_factory: Any, users: Any) -> Any:
    project = project_factory("Synthetic")
    cat = project.categories.get(name="cat")
    for seed in range(2):
        image = images.store(project, images.prepare(png_bytes(64, 48, seed=seed), f"s{seed}.png"))
        for shape, category in ((ring_with_hole(), cat.pk), (two_parts(), None)):
            masks.create_mask(
                image,
                {"segmentation": rle.from_mask(shape).to_coco(), "category": category},
                user=users["annotator"],
            )
    return project


def stored_masks(project: Any) -> dict[str, list[tuple[int, str, str | None]]]:
    """Per image file content hash: the sorted (area, rle, category name) of its masks."""
    out: dict[str, list[tuple[int, str, str | None]]] = {}
    for image in Image.objects.filter(project=project):
        with image.file.open("rb") as handle:
            import hashlib

            key = hashlib.sha256(handle.read()).hexdigest()
        out[key] = sorted(
            (m.area, m.rle_counts, m.category.name if m.category else None)
            for m in image.masks.select_related("category")
        )
    return out


def unpack(export: Any, folder: Path) -> Path:
    target = folder / f"export{export.pk}"
    target.mkdir()
    with export.file.open("rb") as handle, (folder / "x").open("wb") as sink:
        shutil.copyfileobj(handle, sink)
    with tarfile.open(folder / "x") as archive:
        archive.extractall(target, filter="data")
    return target


@pytest.mark.parametrize("masks_as", ["rle", "polygons"])
def test_round_trip_keeps_holes_and_parts_pixel_identical(
    masks_as: str, project_factory: Any, users: Any, tmp_path: Path
) -> None:
    source = synthetic_project(project_factory, users)
    export = exports.make_export(source, {"format": "coco", "masks_as": masks_as})
    folder = unpack(export, tmp_path)
    data = json.loads((folder / "annotations.json").read_text())
    if masks_as == "polygons":
        kinds = {type(a["segmentation"]).__name__ for a in data["annotations"]}
        assert kinds == {"list", "dict"}  # polygons where exact, RLE for the holed masks
    copy = project_factory("Copy", with_members=False)
    report = import_path(copy, folder, "coco")
    assert report.masks == 4 and report.images == 2
    assert stored_masks(copy) == stored_masks(source)
    assert set(Mask.objects.filter(image__project=copy).values_list("source_stage", flat=True)) == {
        MaskSource.IMPORTED
    }
    again = unpack(exports.make_export(copy, {"format": "coco", "masks_as": masks_as}), tmp_path)
    third = project_factory("Third", with_members=False)
    import_path(third, again, "coco")
    assert stored_masks(third) == stored_masks(source)


@pytest.mark.parametrize("masks_as", ["rle", "polygons"])
def test_pycocotools_loads_the_export_and_scores_it_one(
    masks_as: str, project_factory: Any, users: Any, tmp_path: Path
) -> None:
    source = synthetic_project(project_factory, users)
    folder = unpack(exports.make_export(source, {"format": "coco", "masks_as": masks_as}), tmp_path)
    ground_truth = COCO(str(folder / "annotations.json"))
    for annotation in ground_truth.dataset["annotations"]:
        stored = Mask.objects.get(pk=annotation["id"])
        decoded = ground_truth.annToMask(annotation).astype(bool)
        expected = rle.to_mask(rle.Rle(stored.image.height, stored.image.width, stored.rle_counts))
        assert np.array_equal(decoded, expected)
    detections = [
        {**a, "score": 1.0, "segmentation": ground_truth.annToRLE(a)}
        for a in ground_truth.dataset["annotations"]
    ]
    evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_mask_to_polygons_refuses_holes_and_is_exact_otherwise() -> None:
    assert coco.mask_to_polygons(ring_with_hole()) is None
    shape = two_parts()
    polygons = coco.mask_to_polygons(shape)
    assert polygons is not None and len(polygons) == 3
    back = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, 48, 64)))
    assert np.array_equal(back.astype(bool), shape)


def test_filters_choose_the_masks(project_factory: Any, users: Any, tmp_path: Path) -> None:
    source = synthetic_project(project_factory, users)
    export = exports.make_export(
        source, {"format": "coco", "include_images": False, "filters": {"category": ["cat"]}}
    )
    with export.file.open("rb") as handle:
        data = json.load(handle)
    assert len(data["annotations"]) == 2
    assert {a["category_id"] for a in data["annotations"]} == {source.categories.get(name="cat").pk}
    assert exports.select_masks(source, {"review_state": "accepted"}).count() == 0
    assert exports.select_masks(source, {"source": "human"}).count() == 4
    assert exports.select_masks(source, {"created_before": "2000-01-01"}).count() == 0
    with pytest.raises(InvalidInput):
        exports.select_masks(source, {"category": ["nope"]})


def test_a_mask_that_does_not_fit_is_reported_by_id_and_nothing_written(
    project_factory: Any, tmp_path: Path
) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png_bytes(64, 48, seed=3))
    good = rle.from_mask(two_parts()).to_coco()
    wrong = rle.from_mask(np.ones((10, 10), dtype=bool)).to_coco()
    (tmp_path / "annotations.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "images/a.png", "width": 64, "height": 48}],
                "categories": [{"id": 1, "name": "thing"}],
                "annotations": [
                    {"id": 7, "image_id": 1, "category_id": 1, "segmentation": good},
                    {"id": 8, "image_id": 1, "category_id": 1, "segmentation": wrong},
                    {
                        "id": 9,
                        "image_id": 1,
                        "category_id": 1,
                        "segmentation": [[1, 1, 200, 1, 1, 9]],
                    },
                ],
            }
        )
    )
    project = project_factory("Target", with_members=False)
    with pytest.raises(InvalidInput) as refused:
        import_path(project, tmp_path, "coco")
    refs = {p.get("annotation") for p in refused.value.detail["problems"]}
    assert refs == {"8", "9"}
    assert "annotation 8" in refused.value.message
    assert not Image.objects.filter(project=project).exists()
    assert not project.categories.filter(name="thing").exists()


def test_fruits_nuts_polygons_import_and_round_trip(
    shared_data: Path, project_factory: Any, tmp_path: Path
) -> None:
    source_folder = shared_data / "fruits-nuts"
    data = json.loads((source_folder / "annotations.json").read_text())
    keep = data["images"][:3]
    ids = {image["id"] for image in keep}
    subset = {
        "images": keep,
        "categories": data["categories"],
        "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
    }
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "annotations.json").write_text(json.dumps(subset))
    (tmp_path / "in" / "images").symlink_to(source_folder / "images")
    first = project_factory("Fruits", with_members=False)
    report = import_path(first, tmp_path / "in", "coco")
    assert report.images == 3 and report.masks == len(subset["annotations"])
    # What pycocotools makes of the original polygons is what we stored.
    truth = COCO(str(tmp_path / "in" / "annotations.json"))
    for image in Image.objects.filter(project=first):
        original = next(i for i in keep if i["file_name"] == image.file_name)
        expected = sorted(
            int(truth.annToMask(a).sum())
            for a in subset["annotations"]
            if a["image_id"] == original["id"]
        )
        assert sorted(image.masks.values_list("area", flat=True)) == expected
    for masks_as in ("polygons", "rle"):
        folder = unpack(
            exports.make_export(first, {"format": "coco", "masks_as": masks_as}), tmp_path
        )
        second = project_factory(f"Again {masks_as}", with_members=False)
        import_path(second, folder, "coco")
        assert stored_masks(second) == stored_masks(first)
    # SA-1B is class-agnostic: the pixels and areas come back, not the categories.
    export = exports.make_export(first, {"format": "sa1b", "shard_size": 2})
    archive = tmp_path / "sa1b.tar"
    with export.file.open("rb") as handle:
        archive.write_bytes(handle.read())
    third = project_factory("Again sa1b", with_members=False)
    import_path(third, archive, "sa1b")

    def pixels(project: Any) -> dict[str, list[tuple[int, str]]]:
        return {k: sorted((a, r) for a, r, _ in v) for k, v in stored_masks(project).items()}

    assert pixels(third) == pixels(first)


def test_iscrowd_uncompressed_rle_and_compressed_rle_import(
    project_factory: Any, tmp_path: Path
) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes(64, 48, seed=4))
    shape = ring_with_hole()
    compressed = rle.from_mask(shape).to_coco()
    uncompressed = {"size": [48, 64], "counts": rle.decode_counts_string(str(compressed["counts"]))}
    (tmp_path / "instances.json").write_text(
        json.dumps(
            {
                "images": [{"id": 3, "file_name": "a.png", "width": 64, "height": 48}],
                "categories": [{"id": 5, "name": "crowd", "supercategory": "people"}],
                "annotations": [
                    {
                        "id": 1,
                        "image_id": 3,
                        "category_id": 5,
                        "iscrowd": 1,
                        "segmentation": uncompressed,
                    },
                    {
                        "id": 2,
                        "image_id": 3,
                        "category_id": 5,
                        "iscrowd": 0,
                        "segmentation": compressed,
                    },
                ],
            }
        )
    )
    project = project_factory("Crowd", with_members=False)
    report = import_path(project, tmp_path / "instances.json", "coco")
    assert report.masks == 2 and report.categories_created == ["crowd"]
    stored = Mask.objects.filter(image__project=project)
    assert {m.rle_counts for m in stored} == {compressed["counts"]}
    assert project.categories.get(name="crowd").supercategory == "people"
    # The crowd flag survives: kept on the mask and written back by a COCO export.
    assert sorted(m.is_crowd for m in stored) == [False, True]
    export = exports.make_export(project, {"format": "coco", "masks_as": "rle"})
    (tmp_path / "out").mkdir()
    folder = unpack(export, tmp_path / "out")
    exported = json.loads(next(folder.rglob("*.json")).read_text())
    assert sorted(a["iscrowd"] for a in exported["annotations"]) == [0, 1]

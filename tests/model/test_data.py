"""Reading the COCO-format sets: polygons and RLE, splits, instances."""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from model.train.data import (
    SHARED_DATA_ENV,
    decode_segmentation,
    iter_instances,
    load_coco_set,
    load_splits,
    shared_data_root,
)

DATA = shared_data_root()
needs_data = pytest.mark.skipif(
    not (DATA / "splits.json").is_file(),
    reason=f"shared data not found at {DATA} (set MASKLOOP_SHARED_DATA to ../shared/data)",
)


def _square(h: int = 20, w: int = 30) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[5:15, 10:20] = True
    return mask


# --------------------------------------------------------------------------- decoding


def test_polygon_decodes_to_its_area() -> None:
    # pycocotools rasterises a polygon's corners inclusively: (10,5)-(19,14) is 10x10 pixels.
    polygon = [[10, 5, 19, 5, 19, 14, 10, 14]]
    mask = decode_segmentation(polygon, 20, 30)
    assert mask.dtype == bool and mask.shape == (20, 30)
    assert mask.sum() == pytest.approx(100, abs=20)
    assert mask[10, 15] and not mask[0, 0]


def test_degenerate_polygons_are_ignored() -> None:
    assert not decode_segmentation([[1, 1, 5, 5]], 20, 30).any()  # 2 points, not a box
    assert decode_segmentation([[1, 1], [10, 5, 19, 5, 19, 14, 10, 14]], 20, 30).any()


@pytest.mark.parametrize("counts_as", ["str", "bytes", "list"])
def test_rle_compressed_and_uncompressed_decode_exactly(counts_as: str) -> None:
    mask = _square()
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if counts_as == "str":
        segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    elif counts_as == "bytes":
        segmentation = dict(rle)
    else:
        # Uncompressed: run lengths in column-major order, starting with background.
        flat = mask.flatten(order="F").tolist()
        counts = ([0] if flat[0] else []) + [len(list(run)) for _, run in groupby(flat)]
        segmentation = {"size": list(mask.shape), "counts": counts}
    np.testing.assert_array_equal(decode_segmentation(segmentation, 20, 30), mask)


def test_rle_of_another_size_is_an_error() -> None:
    rle = mask_utils.encode(np.asfortranarray(_square().astype(np.uint8)))
    with pytest.raises(ValueError, match="size"):
        decode_segmentation({"size": rle["size"], "counts": rle["counts"]}, 30, 20)


# --------------------------------------------------------------------------- sets and splits


def _write_set(root: Path) -> Path:
    """A 4-image set (ids 1..4, image 2 and 4 validation) with polygons, RLE and a crowd."""
    folder = root / "toy"
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    rle = mask_utils.encode(np.asfortranarray(_square().astype(np.uint8)))
    for image_id in range(1, 5):
        bgr = np.zeros((20, 30, 3), np.uint8)
        bgr[..., 2] = 255  # pure red in OpenCV's BGR order
        cv2.imwrite(str(folder / "images" / f"{image_id}.png"), bgr)
        images.append(
            {"id": image_id, "file_name": f"images/{image_id}.png", "width": 30, "height": 20}
        )
        annotations += [
            {"id": 10 * image_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
             "segmentation": [[10, 5, 19, 5, 19, 14, 10, 14]], "area": 100, "bbox": [10, 5, 9, 9]},
            {"id": 10 * image_id + 1, "image_id": image_id, "category_id": 2, "iscrowd": 0,
             "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
             "area": 4 if image_id == 1 else 100, "bbox": [10, 5, 10, 10]},
            {"id": 10 * image_id + 2, "image_id": image_id, "category_id": 1, "iscrowd": 1,
             "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
             "area": 100, "bbox": [10, 5, 10, 10]},
        ]  # fmt: skip
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (folder / "annotations.json").write_text(json.dumps(coco))
    (root / "splits.json").write_text(json.dumps({"toy": {"val": [2, 4]}}))
    return folder


def test_set_reads_images_annotations_and_its_split(tmp_path: Path) -> None:
    coco_set = load_coco_set(_write_set(tmp_path))
    assert coco_set.name == "toy" and coco_set.categories == {1: "a", 2: "b"}
    assert coco_set.image_ids("val") == [2, 4]
    assert coco_set.image_ids("train") == [1, 3]
    assert coco_set.image_ids("all") == [1, 2, 3, 4]
    instance = next(iter_instances(coco_set, "val"))
    image = instance.load_image()
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == (255, 0, 0), "RGB order"
    assert instance.mask().sum() == pytest.approx(100, abs=20)


def test_iter_instances_filters_crowds_small_objects_and_limits_images(tmp_path: Path) -> None:
    coco_set = load_coco_set(_write_set(tmp_path))
    train = list(iter_instances(coco_set, "train"))
    assert [i.annotation.id for i in train] == [10, 11, 30, 31], "crowd regions skipped"
    kept = list(iter_instances(coco_set, "train", min_area=50))
    assert [i.annotation.id for i in kept] == [10, 30, 31]
    assert len(list(iter_instances(coco_set, "all", include_crowd=True))) == 12
    first = list(iter_instances(coco_set, "val", limit_images=1))
    assert {i.image.id for i in first} == {2}
    everything = {i.image.id for i in iter_instances(coco_set, "all")}
    rest = {i.image.id for i in iter_instances(coco_set, "all", skip_images=1)}
    head = {i.image.id for i in iter_instances(coco_set, "all", limit_images=1)}
    assert rest and head.isdisjoint(rest) and head | rest == everything


def test_unknown_split_or_missing_splits_are_errors(tmp_path: Path) -> None:
    folder = _write_set(tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        load_coco_set(folder).image_ids("test")  # type: ignore[arg-type]
    (tmp_path / "splits.json").unlink()
    coco_set = load_coco_set(folder)
    assert coco_set.val_ids is None and len(coco_set.image_ids("all")) == 4
    with pytest.raises(ValueError, match="no validation ids"):
        coco_set.image_ids("val")


def test_data_root_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path))
    assert shared_data_root() == tmp_path
    monkeypatch.delenv(SHARED_DATA_ENV)
    assert shared_data_root().parts[-2:] == ("shared", "data")


# --------------------------------------------------------------------------- real data


@needs_data
@pytest.mark.parametrize("name", ["coco128-seg", "fruits-nuts"])
def test_real_polygons_decode_close_to_their_area(name: str) -> None:
    coco_set = load_coco_set(DATA / name)
    instances = [i for i in iter_instances(coco_set, "val") if i.annotation.area >= 1000][:5]
    assert instances, f"{name}: no validation instance of at least 1000 px"
    for inst in instances:
        assert isinstance(inst.annotation.segmentation, list)
        mask = inst.mask()
        assert mask.shape == (inst.image.height, inst.image.width)
        assert mask.sum() == pytest.approx(inst.annotation.area, rel=0.05)


@needs_data
@pytest.mark.parametrize("name", ["davis345", "pennfudan170"])
def test_real_rle_decodes_to_its_area_and_matches_its_image(name: str) -> None:
    coco_set = load_coco_set(DATA / name)
    inst = next(iter_instances(coco_set, "val"))
    assert isinstance(inst.annotation.segmentation, dict)
    mask = inst.mask()
    assert mask.sum() == inst.annotation.area
    assert inst.load_image().shape == (*mask.shape, 3)


@needs_data
def test_real_splits_are_disjoint_and_match_splits_json() -> None:
    raw = json.loads((DATA / "splits.json").read_text())
    splits = load_splits(DATA)
    assert set(splits) == set(raw)
    for name, val_ids in splits.items():
        coco_set = load_coco_set(DATA / name)
        val, train = coco_set.image_ids("val"), coco_set.image_ids("train")
        assert set(val) == set(raw[name]["val"]) == val_ids
        assert not set(val) & set(train)
        assert sorted(val + train) == sorted(coco_set.images)
        instances = iter_instances(coco_set, "val")
        assert {i.image.id for i in instances} <= val_ids

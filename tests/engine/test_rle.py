"""COCO RLE: our codec agrees with pycocotools; malformed input is refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from engine import rle
from engine.errors import InvalidInput


@pytest.mark.parametrize("seed", range(20))
def test_codec_matches_pycocotools(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(1, 80, 2))
    mask = rng.random((height, width)) < rng.random()
    theirs = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    ours = rle.from_mask(mask)
    assert ours.counts == theirs["counts"].decode()
    runs = rle.decode_counts_string(ours.counts)
    assert rle.encode_counts(runs) == ours.counts
    assert sum(runs) == height * width
    assert rle.area(ours) == int(mask.sum())
    np.testing.assert_array_equal(rle.to_mask(ours), mask)


def test_uncompressed_counts_are_accepted_and_compressed() -> None:
    mask = np.zeros((4, 5), dtype=bool)
    mask[1:3, 1:4] = True
    runs = rle.decode_counts_string(rle.from_mask(mask).counts)
    parsed = rle.parse({"size": [4, 5], "counts": runs}, height=4, width=5)
    assert parsed == rle.from_mask(mask)
    assert rle.bbox(parsed) == [1.0, 1.0, 3.0, 2.0]


@pytest.mark.parametrize(
    "segmentation,reason",
    [
        ({"size": [4, 5], "counts": [3, 4]}, "sum to 7"),
        ({"size": [5, 4], "counts": [20]}, "does not match the image"),
        ({"size": [4, 5], "counts": [10, -2, 12]}, "negative"),
        ({"size": [4, 5], "counts": "\x7f\x7f"}, "invalid character"),
        ({"size": [4, 5], "counts": "PP"}, "middle of a number"),
        ({"size": [4, 5]}, "string or a list"),
        ({"size": "4x5", "counts": [20]}, "[height, width]"),
        ([1, 2, 3], "object"),
        ({"size": [4, 5], "counts": [True, 19]}, "string or a list"),
    ],
)
def test_malformed_rle_is_refused(segmentation: object, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        rle.parse(segmentation, height=4, width=5)
    assert reason in refused.value.message

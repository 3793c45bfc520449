"""COCO run-length encoding: validation, area and box without decoding the mask.

COCO RLE runs are column-major (Fortran order) and start with a run of zeros. The compressed
string form packs each count in 5-bit groups with a continuation bit, counts after the second
stored as a difference to the count two places back (pycocotools' ``rleToString``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as coco_mask

from engine.errors import InvalidInput


@dataclass(frozen=True)
class Rle:
    height: int
    width: int
    counts: str  # compressed

    def to_coco(self) -> dict[str, object]:
        return {"size": [self.height, self.width], "counts": self.counts}


def decode_counts_string(counts: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string (inverse of ``encode_counts``)."""
    runs: list[int] = []
    pos = 0
    data = counts.encode("ascii")
    while pos < len(data):
        value = 0
        shift = 0
        more = True
        while more:
            if pos >= len(data):
                raise InvalidInput("RLE counts string ends in the middle of a number")
            char = data[pos] - 48
            if char < 0 or char > 63:
                raise InvalidInput(f"RLE counts contain an invalid character {chr(data[pos])!r}")
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            pos += 1
            shift += 1
            if not more and (char & 0x10):
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def encode_counts(runs: Sequence[int]) -> str:
    """Compress run lengths into COCO's string form."""
    out = bytearray()
    for i, run in enumerate(runs):
        value = int(run) - (int(runs[i - 2]) if i > 2 else 0)
        more = True
        while more:
            char = value & 0x1F
            value >>= 5
            more = not ((char & 0x10) == 0 and value == 0 or (char & 0x10) != 0 and value == -1)
            if more:
                char |= 0x20
            out.append(char + 48)
    return out.decode("ascii")


def parse(segmentation: object, *, height: int, width: int) -> Rle:
    """Validate a COCO RLE (compressed string or uncompressed list of counts) for an image of
    the given size and return it compressed. Raises InvalidInput with a clear message."""
    if not isinstance(segmentation, dict):
        raise InvalidInput("segmentation must be an object with 'size' and 'counts'")
    size = segmentation.get("size")
    counts = segmentation.get("counts")
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise InvalidInput("segmentation.size must be [height, width]")
    if [size[0], size[1]] != [height, width]:
        raise InvalidInput(
            f"segmentation.size {list(size)} does not match the image ({height}x{width})",
            expected=[height, width],
        )
    if isinstance(counts, str):
        try:
            runs = decode_counts_string(counts)
        except UnicodeEncodeError:
            raise InvalidInput("RLE counts string must be ASCII") from None
    elif isinstance(counts, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in counts
    ):
        runs = list(counts)
    else:
        raise InvalidInput("segmentation.counts must be a string or a list of integers")
    if any(run < 0 for run in runs):
        raise InvalidInput("RLE counts must not be negative")
    total = sum(runs)
    if total != height * width:
        raise InvalidInput(
            f"RLE counts sum to {total}, not height x width = {height * width}",
        )
    return Rle(height=height, width=width, counts=encode_counts(runs))


def area(rle: Rle) -> int:
    return int(coco_mask.area(_coco(rle)))


def bbox(rle: Rle) -> list[float]:
    """[x, y, width, height], COCO convention."""
    return [float(v) for v in coco_mask.toBbox(_coco(rle))]


def from_mask(mask: np.ndarray) -> Rle:
    """Compress an HxW boolean mask."""
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    height, width = (int(v) for v in encoded["size"])
    return Rle(height=height, width=width, counts=encoded["counts"].decode("ascii"))


def to_mask(rle: Rle) -> np.ndarray:
    return coco_mask.decode(_coco(rle)).astype(bool)


def _coco(rle: Rle) -> dict[str, object]:
    return {"size": [rle.height, rle.width], "counts": rle.counts.encode("ascii")}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two HxW bool masks (two empty masks agree: 1)."""
    union = int(np.count_nonzero(a | b))
    return int(np.count_nonzero(a & b)) / union if union else 1.0

"""Run-length storage for candidate masks while the generator works.

Thousands of candidates can pass the per-batch filters before NMS decides which to keep; as
full-size bool arrays they would take gigabytes on a large image. Runs of a blob-like mask
take a few kilobytes. Only the masks finally kept are expanded back to bool arrays.

Runs are row-major (C order) over a mask of known shape and alternate background /
foreground, starting with background (a leading 0 when the first pixel is set). This is an
internal form, not COCO's column-major RLE: the engine encodes what it stores itself.
"""

from __future__ import annotations

import numpy as np
import torch


def encode_runs(masks: torch.Tensor) -> list[np.ndarray]:
    """NxHxW bool masks (any device) -> N int64 run arrays, found for the whole batch at once.

    Only the change positions cross to the CPU, not the masks.
    """
    n = masks.shape[0]
    if n == 0:
        return []
    flat = masks.reshape(n, -1)
    size = flat.shape[1]
    changes = (flat[:, 1:] != flat[:, :-1]).nonzero().cpu().numpy()  # (K, 2): mask, position
    first_set = flat[:, 0].cpu().numpy()
    # nonzero lists row-major, so each mask's positions are contiguous and ascending.
    splits = np.searchsorted(changes[:, 0], np.arange(1, n))
    runs = []
    for i, positions in enumerate(np.split(changes[:, 1] + 1, splits)):
        bounds = np.concatenate(([0], positions, [size])).astype(np.int64)
        lengths = np.diff(bounds)
        runs.append(np.concatenate(([0], lengths)) if first_set[i] else lengths)
    return runs


def encode_mask(mask: np.ndarray) -> np.ndarray:
    """One HxW bool mask -> runs (see ``encode_runs``)."""
    return encode_runs(torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))[None])[0]


def decode_runs(runs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Runs -> an HxW bool mask of the given shape."""
    if int(runs.sum()) != shape[0] * shape[1]:
        raise ValueError(f"runs cover {int(runs.sum())} pixels, shape {shape} has more or fewer")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    return np.repeat(values, runs).reshape(shape)


def runs_area(runs: np.ndarray) -> int:
    """Foreground pixels of a run-length mask."""
    return int(runs[1::2].sum())

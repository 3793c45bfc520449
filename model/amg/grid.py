"""Where the automatic mask generator looks: point grids, zoomed crops, and the maps between
a crop's frame and the image's.

Layer 0 is the whole image; layer i > 0 cuts it into 2^i x 2^i overlapping crops, each
embedded as an image of its own so that small objects get more encoder pixels (SA-1B's
fully automatic stage). The arithmetic follows Meta's ``generate_crop_boxes`` so that crops,
and thus masks, land on the same pixels as with the reference generator.

Boxes are XYXY with an exclusive right/bottom edge (``x1 = last column + 1``), the same
convention as a crop's slice ``image[y0:y1, x0:x1]``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Crop:
    """One region of the image that is embedded and prompted on its own.

    box: (x0, y0, x1, y1) in image pixels, exclusive right/bottom edge.
    layer: 0 for the whole image, i for the 2^i x 2^i layer.
    """

    box: tuple[int, int, int, int]
    layer: int

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> int:
        return self.width * self.height

    @property
    def xywh(self) -> list[int]:
        """The box as SA-1B's ``crop_box`` writes it."""
        return [self.box[0], self.box[1], self.width, self.height]


def point_grid(n_per_side: int) -> np.ndarray:
    """An n x n grid of (x, y) points in [0, 1]^2, each at the centre of its cell.

    Centred cells keep the grid symmetric and away from the border, where a single click is
    most ambiguous. Returns (n*n)x2 float64, x varying fastest (row-major, like Meta's).
    """
    if n_per_side < 1:
        raise ValueError(f"a point grid needs at least 1 point per side, got {n_per_side}")
    offset = 1.0 / (2 * n_per_side)
    side = np.linspace(offset, 1.0 - offset, n_per_side)
    xs, ys = np.meshgrid(side, side)  # xs varies along columns: row-major order
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One normalised grid per layer (0 .. n_layers), layer i with n / downscale^i per side.

    Zoomed crops are smaller, so SA-1B prompts them more sparsely (32, 16, 8 points per side);
    per image pixel the density still rises with the zoom.
    """
    if downscale < 1:
        raise ValueError(f"the per-layer point downscale must be >= 1, got {downscale}")
    return [point_grid(int(n_per_side / downscale**layer)) for layer in range(n_layers + 1)]


def crop_boxes(image_size: tuple[int, int], n_layers: int, overlap_ratio: float) -> list[Crop]:
    """The whole image, then layer by layer 2^i x 2^i crops that overlap their neighbours.

    image_size: (H, W). In layer i the overlap is ``overlap_ratio * min(H, W) * 2 / 2^i``
    pixels, so an object cut by one crop's edge lies whole in its neighbour. Crops are listed
    column by column (x outer), as Meta lists them. A crop that would be empty (only on images
    a few pixels wide) is left out rather than handed to the encoder.
    """
    im_h, im_w = image_size
    if im_h < 1 or im_w < 1:
        raise ValueError(f"image size must be positive, got {image_size}")
    crops = [Crop((0, 0, im_w, im_h), 0)]
    short_side = min(im_h, im_w)
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = _crop_length(im_w, per_side, overlap)
        crop_h = _crop_length(im_h, per_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in itertools.product(x0s, y0s):
            box = (x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h))
            if box[2] > box[0] and box[3] > box[1]:
                crops.append(Crop(box, layer))
    return crops


def _crop_length(full: int, n_crops: int, overlap: int) -> int:
    """Side of each of ``n_crops`` equal crops that cover ``full`` with ``overlap`` between."""
    return int(math.ceil((overlap * (n_crops - 1) + full) / n_crops))


def uncrop_boxes(boxes: torch.Tensor, crop: Crop) -> torch.Tensor:
    """...x4 XYXY boxes in the crop's frame -> the image's frame."""
    x0, y0 = crop.box[0], crop.box[1]
    offset = torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype, device=boxes.device)
    return boxes + offset


def uncrop_points(points: np.ndarray, crop: Crop) -> np.ndarray:
    """...x2 (x, y) points in the crop's frame -> the image's frame."""
    return np.asarray(points) + np.array([crop.box[0], crop.box[1]], dtype=np.float64)


def uncrop_mask(mask: np.ndarray, crop: Crop, image_size: tuple[int, int]) -> np.ndarray:
    """An hxw mask over the crop -> an HxW mask over the image, False outside the crop."""
    if mask.shape != (crop.height, crop.width):
        raise ValueError(f"mask {mask.shape} does not fit crop {crop.box}")
    x0, y0, x1, y1 = crop.box
    if (x0, y0, x1, y1) == (0, 0, image_size[1], image_size[0]):
        return mask
    full = np.zeros(image_size, dtype=mask.dtype)
    full[y0:y1, x0:x1] = mask
    return full

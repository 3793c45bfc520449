"""The tests a candidate mask must pass to be kept, and the clean-up applied to the survivors.

SA-1B's fully automatic stage keeps a mask when the model trusts it (predicted IoU), when it
does not move as the logit cut-off moves (stability), when no better mask covers the same box
(NMS), and when it is not an artefact of a crop edge; islands and holes under 100 px are then
cleaned, and masks that are mostly specks or that cover nearly the whole image are dropped.

There is no torchvision here, so box NMS is written out; boxes are XYXY with an exclusive
right/bottom edge, so a box's area is the pixel extent of its mask.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of the mask cut at ``threshold + offset`` with the mask cut at ``threshold - offset``.

    logits: ...xHxW. The higher cut's mask lies inside the lower's, so the IoU is a ratio of
    two pixel counts: a confident mask barely changes, an unsure one shrinks or grows. An
    empty lower mask scores 0: nothing there to be stable. Returns ... float32.
    """
    inner = (logits > threshold + offset).sum(dim=(-2, -1), dtype=torch.int64)
    outer = (logits > threshold - offset).sum(dim=(-2, -1), dtype=torch.int64)
    score = inner.float() / outer.clamp(min=1).float()
    return torch.where(outer > 0, score, torch.zeros_like(score))


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes around NxHxW bool masks (exclusive right/bottom), int64 Nx4.

    An empty mask gets (0, 0, 0, 0).
    """
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=masks.device)
    rows = masks.any(dim=2).to(torch.uint8)  # NxH
    cols = masks.any(dim=1).to(torch.uint8)  # NxW
    # argmax returns the first maximal index: the first row/column that holds the mask.
    y0 = rows.argmax(dim=1)
    y1 = h - rows.flip(1).argmax(dim=1)
    x0 = cols.argmax(dim=1)
    x1 = w - cols.flip(1).argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.int64)
    empty = ~rows.bool().any(dim=1)
    return boxes.masked_fill(empty[:, None], 0)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ...x4 XYXY boxes; an inverted box has area 0."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(
        min=0
    )


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """NxM IoU between Nx4 and Mx4 XYXY boxes; two empty boxes have IoU 0, not NaN."""
    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, torchvision's ``nms`` contract.

    Boxes are taken best score first; each one is kept unless a kept box overlaps it with
    IoU > ``iou_threshold``. Equal scores keep their input order, so results are
    deterministic. Returns the kept indices (int64, on ``boxes.device``) best score first.

    The loop is sequential by nature, so it runs on the CPU in float64 whatever the device:
    the boxes are a few kilobytes, while a GPU would synchronise at every step.
    """
    n = boxes.shape[0]
    if scores.shape != (n,) or boxes.shape != (n, 4):
        raise ValueError(f"expected Nx4 boxes and N scores, got {boxes.shape} and {scores.shape}")
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    cpu_boxes = boxes.detach().to("cpu", torch.float64)
    order = torch.sort(scores.detach().to("cpu", torch.float64), descending=True, stable=True)
    ranked = cpu_boxes[order.indices]
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        if i + 1 < n:
            overlap = box_iou(ranked[i : i + 1], ranked[i + 1 :])[0] > iou_threshold
            suppressed[i + 1 :] |= overlap.numpy()
    return order.indices[torch.tensor(keep, dtype=torch.int64)].to(boxes.device)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, categories: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS within each category only (torchvision's ``batched_nms`` contract).

    Each category's boxes are shifted by a multiple of the coordinate span, so boxes of
    different categories never overlap and one plain NMS does all categories at once.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    shifted = boxes.detach().to("cpu", torch.float64)
    span = shifted.max() - shifted.min() + 1
    shifted = shifted + (categories.detach().to(shifted) * span)[:, None]
    return nms(shifted, scores, iou_threshold).to(boxes.device)


def near_crop_edge(
    boxes: torch.Tensor,
    crop_box: tuple[int, int, int, int],
    image_size: tuple[int, int],
    tolerance: float,
) -> torch.Tensor:
    """Which Nx4 XYXY boxes (image frame) come within ``tolerance`` px of an inner crop edge.

    An object cut by a crop's edge yields a truncated mask there; its whole version comes
    from a neighbouring crop or a coarser layer. Edges that are also image edges cut nothing,
    so touching them is fine: on the whole-image crop nothing is flagged. Returns N bool.
    """
    # float32 holds pixel coordinates exactly and every device has it.
    crop = torch.tensor(crop_box, dtype=torch.float32, device=boxes.device)
    image = torch.tensor(
        (0, 0, image_size[1], image_size[0]), dtype=torch.float32, device=boxes.device
    )
    b = boxes.to(torch.float32)
    at_crop_edge = torch.isclose(b, crop[None], rtol=0, atol=tolerance)
    at_image_edge = torch.isclose(b, image[None], rtol=0, atol=tolerance)
    return (at_crop_edge & ~at_image_edge).any(dim=1)


def remove_small_regions(
    mask: np.ndarray, area_threshold: int, mode: Literal["holes", "islands"]
) -> tuple[np.ndarray, bool]:
    """Fill holes (or delete islands) smaller than ``area_threshold`` px, as Meta's generator.

    Regions are 8-connected. A "hole" is any connected part of the background, the image
    border included, so a background that is itself under the threshold is filled too. When
    every island is small, the largest one stays, so the mask never empties here. Returns
    the mask and whether it changed.
    """
    cleaned, changed, _ = _clean_regions(mask, area_threshold, fill_holes=mode == "holes")
    return cleaned, changed


def largest_region_area(mask: np.ndarray) -> int:
    """Pixels in the largest 8-connected part of an HxW bool mask (0 when empty)."""
    return _clean_regions(mask, 0, fill_holes=False)[2]


def clean_mask(mask: np.ndarray, min_region_area: int) -> tuple[np.ndarray, bool, int]:
    """SA-1B's clean-up: fill holes, then delete islands, under ``min_region_area`` px.

    Returns the cleaned mask, whether anything changed, and the area of its largest part
    (computed in the same pass, for the "largest part under 100 px" filter).
    """
    filled, holes_changed, _ = _clean_regions(mask, min_region_area, fill_holes=True)
    cleaned, islands_changed, largest = _clean_regions(filled, min_region_area, fill_holes=False)
    return cleaned, holes_changed or islands_changed, largest


def keep_by_area(
    *, area: int, largest_region: int, image_area: int, min_largest: int, max_fraction: float
) -> bool:
    """The final area tests: a mask whose largest part is under ``min_largest`` px is mostly
    specks, one that covers >= ``max_fraction`` of the image is background, not an object."""
    return largest_region >= min_largest and area < max_fraction * image_area


def _clean_regions(
    mask: np.ndarray, area_threshold: int, *, fill_holes: bool
) -> tuple[np.ndarray, bool, int]:
    """Connected parts of the background (holes) or of the mask (islands) under the threshold
    switched over. Returns (mask, changed, largest part's area among those examined)."""
    working = (~mask if fill_holes else mask).astype(np.uint8)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(working, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]  # label 0 is the other side of the mask
    largest = int(sizes.max()) if sizes.size else 0
    small = sizes < area_threshold
    if not small.any():
        return mask, False, largest
    if fill_holes:
        # Result = mask plus the small background parts.
        lut = np.concatenate([[True], small])
    else:
        lut = np.concatenate([[False], ~small])
        if not lut.any():
            lut[1 + int(np.argmax(sizes))] = True
    return lut[labels], True, largest

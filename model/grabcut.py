"""GrabCut seeded from clicks: the classical baseline every "beats GrabCut" figure refers to.

The seeding follows DECISIONS.md item 3 exactly (OpenCV ``grabCut`` with ``GC_INIT_WITH_MASK``,
5 iterations, full-resolution image):

- the mask starts as probable background;
- a disc of radius 20% of the image's shorter side around each positive click is probable
  foreground;
- a disc of radius 5 px around each click is definite foreground (positive click) or definite
  background (negative click);
- the big positive discs are drawn first, then all 5-px discs (so every click's small disc
  wins over any big disc, e.g. a negative click inside a positive click's big disc);
- the result is definite + probable foreground.

Choices the decision leaves open, documented here and in the docstrings:

- **Box prompt.** As GrabCut's own ``GC_INIT_WITH_RECT`` does: everything outside the box is
  definite background and everything inside probable foreground. The 20% discs are then not
  drawn (inside the box they would change nothing, and outside it the user has said the
  object is not); the 5-px click discs are still drawn on top, wherever they fall.
- **One mask always.** GrabCut has no notion of ambiguity, so ``multimask_output`` is ignored
  and ``masks`` is 1xHxW. Callers must handle C = 1.
- **No IoU estimate.** ``iou_predictions`` is ``[nan]``: GrabCut has no confidence, and NaN
  makes every "predicted IoU > t" filter reject it rather than pretend it is perfect. Anything
  that serialises it to JSON must map NaN to null.
- **No logits.** ``low_res_logits`` is None and ``mask_input`` is ignored: the baseline is
  defined from the clicks alone, so feeding the previous mask back would change the baseline.
- **Determinism.** OpenCV initialises GrabCut's colour models with k-means seeded from its
  global RNG; we reseed it before every call so the same prompt always gives the same mask.
"""

from __future__ import annotations

import cv2
import numpy as np

from model.types import Prediction

#: GrabCut iterations (DECISIONS.md item 3).
ITERATIONS = 5
#: Radius of the probable-foreground disc around a positive click, as a share of the shorter side.
BIG_DISC_FRACTION = 0.20
#: Radius in pixels of the definite foreground / background disc around every click.
SMALL_DISC_RADIUS = 5
#: OpenCV's GMMs have 5 components each, and k-means needs at least as many samples as clusters.
_MIN_SAMPLES = 5


class GrabCutPredictor:
    """Interactive predictor answering each prompt with OpenCV GrabCut (see module docstring).

    Implements :class:`model.types.InteractivePredictor`. Every ``predict`` call starts
    GrabCut afresh from the full set of clicks given, so the evaluation protocol passes all
    clicks so far at each step.
    """

    def __init__(self, *, iterations: int = ITERATIONS, seed: int = 0) -> None:
        self.iterations = iterations
        self.seed = seed
        self._image_bgr: np.ndarray | None = None

    def set_image(self, image: np.ndarray) -> None:
        """Keep the image for the following prompts.

        Arguments:
            image: HxWx3 uint8 RGB.
        """
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
        # OpenCV's convention is BGR; GrabCut's full-covariance GMMs do not care about channel
        # order, but keeping OpenCV's order makes the baseline identical to plain cv2 code.
        self._image_bgr = np.ascontiguousarray(image[:, :, ::-1].astype(np.uint8, copy=False))

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> Prediction:
        """Segment from clicks and/or a box.

        Arguments:
            point_coords: Nx2 float (x, y) pixels of the original image, or None.
            point_labels: N int, 1 positive, 0 negative.
            box: 4 float (x0, y0, x1, y1), or None.
            mask_input: ignored (GrabCut has no logits; see module docstring).
            multimask_output: ignored; one mask is always returned.

        Returns:
            Prediction with masks 1xHxW bool, iou_predictions ``[nan]`` (float32),
            low_res_logits None. The mask is empty when there is neither a positive click nor
            a box.
        """
        del mask_input, multimask_output  # documented as ignored
        image = self._image_bgr
        if image is None:
            raise RuntimeError("call set_image() before predict()")
        height, width = image.shape[:2]
        seeds = seed_mask(
            (height, width), point_coords=point_coords, point_labels=point_labels, box=box
        )
        if seeds is None:
            # No positive click and no box: nothing is asked for, so nothing is segmented.
            mask = np.zeros((height, width), dtype=bool)
        else:
            mask = _run_grabcut(image, seeds, iterations=self.iterations, seed=self.seed)
        return Prediction(
            masks=mask[None],
            iou_predictions=np.full(1, np.nan, dtype=np.float32),
            low_res_logits=None,
        )


def _run_grabcut(
    image_bgr: np.ndarray, seeds: np.ndarray, *, iterations: int, seed: int
) -> np.ndarray:
    """Run GrabCut on an HxWx3 uint8 BGR image from an HxW uint8 ``GC_*`` seed mask.

    Returns the HxW bool foreground (definite + probable).
    """
    fg_seed = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    n_fg = int(fg_seed.sum())
    # GrabCut asserts on an empty sample set for either model, and k-means fails with fewer
    # samples than GMM components: with nothing to contrast, the seeds are the answer.
    if n_fg < _MIN_SAMPLES or fg_seed.size - n_fg < _MIN_SAMPLES:
        return fg_seed
    mask = seeds.copy()
    bgd_model = np.zeros((1, 65), dtype=np.float64)
    fgd_model = np.zeros((1, 65), dtype=np.float64)
    cv2.setRNGSeed(seed)
    try:
        # The rect is ignored with GC_INIT_WITH_MASK.
        cv2.grabCut(
            image_bgr, mask, (0, 0, 0, 0), bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_MASK
        )
    except cv2.error:
        # Degenerate colour statistics can still trip OpenCV's checks; an annotation tool must
        # answer something, and the seeds are the best guess.
        return fg_seed
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def seed_mask(
    shape: tuple[int, int],
    *,
    point_coords: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
) -> np.ndarray | None:
    """Draw GrabCut's initial label mask from the prompts (DECISIONS.md item 3).

    Arguments:
        shape: (H, W) of the image.
        point_coords: Nx2 (x, y) pixels; rounded to the nearest pixel. Clicks outside the image
            still draw the part of their discs that falls inside it.
        point_labels: N, 1 positive, 0 negative; -1 (SAM's padding point) is ignored.
        box: 4 (x0, y0, x1, y1) pixels, clipped to the image.

    Returns:
        HxW uint8 mask of ``cv2.GC_BGD / GC_FGD / GC_PR_BGD / GC_PR_FGD``, or None when there
        is nothing to segment (no positive click and no non-empty box).
    """
    height, width = shape
    points, labels = _as_points(point_coords, point_labels)
    has_positive = bool((labels == 1).any())
    box_px = _clip_box(box, height, width) if box is not None else None
    if not has_positive and box_px is None:
        return None

    if box_px is not None:
        # What GC_INIT_WITH_RECT would do: outside definite background, inside probable FG.
        mask = np.full((height, width), cv2.GC_BGD, dtype=np.uint8)
        x0, y0, x1, y1 = box_px
        mask[y0:y1, x0:x1] = cv2.GC_PR_FGD
    else:
        mask = np.full((height, width), cv2.GC_PR_BGD, dtype=np.uint8)
        big_radius = max(1, round(BIG_DISC_FRACTION * min(height, width)))
        for (x, y), label in zip(points, labels, strict=True):
            if label == 1:
                cv2.circle(mask, (x, y), big_radius, cv2.GC_PR_FGD, thickness=-1)
    for (x, y), label in zip(points, labels, strict=True):
        value = cv2.GC_FGD if label == 1 else cv2.GC_BGD
        cv2.circle(mask, (x, y), SMALL_DISC_RADIUS, value, thickness=-1)
    return mask


def _as_points(
    point_coords: np.ndarray | None, point_labels: np.ndarray | None
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Nx2 float coords and N labels -> M integer (x, y) tuples and M labels (0 or 1).

    Points labelled -1 (SAM's "not a point" padding) are dropped.
    """
    if point_coords is None or len(point_coords) == 0:
        return [], np.zeros(0, dtype=np.int64)
    coords = np.asarray(point_coords, dtype=np.float64).reshape(-1, 2)
    if point_labels is None:
        raise ValueError("point_labels must be given with point_coords")
    labels = np.asarray(point_labels).reshape(-1).astype(np.int64)
    if len(labels) != len(coords):
        raise ValueError(f"{len(coords)} points but {len(labels)} labels")
    keep = labels >= 0
    # cv2.circle wants plain ints; clamping keeps absurd coordinates from overflowing int32.
    rounded = np.clip(np.rint(coords[keep]), -(2**20), 2**20).astype(np.int64)
    return [(int(x), int(y)) for x, y in rounded], (labels[keep] > 0).astype(np.int64)


def _clip_box(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int] | None:
    """4 (x0, y0, x1, y1) -> integer box clipped to the image, or None when it is empty."""
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64).reshape(4)
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    # Continuous coordinates: every pixel the box touches is inside (floor / ceil).
    ix0, iy0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    ix1, iy1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    return ix0, iy0, ix1, iy1

"""GrabCut baseline: what an annotator would notice when clicking (DECISIONS.md item 3)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from model.grabcut import BIG_DISC_FRACTION, GrabCutPredictor, seed_mask

H, W = 120, 160
RED = (220, 40, 40)


def _scene(*, blob: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A red disc (radius 30 at (60, 60)) on green-grey noise; optionally a red square at x=130.

    Returns the HxWx3 uint8 RGB image, the HxW bool disc and the HxW bool square.
    """
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 140, size=(H, W, 3)).astype(np.int64)
    image[..., 1] += 40
    yy, xx = np.mgrid[:H, :W]
    disc = (xx - 60) ** 2 + (yy - 60) ** 2 <= 30**2
    square = (np.abs(xx - 130) <= 12) & (np.abs(yy - 60) <= 12)
    painted = disc | square if blob else disc
    image[painted] = np.array(RED) + rng.integers(-15, 15, size=(int(painted.sum()), 3))
    return image.clip(0, 255).astype(np.uint8), disc, square & blob


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _predict(
    image: np.ndarray, points: list[tuple[float, float]], labels: list[int], **kwargs: object
) -> np.ndarray:
    predictor = GrabCutPredictor()
    predictor.set_image(image)
    out = predictor.predict(
        np.array(points, dtype=np.float32).reshape(-1, 2),
        np.array(labels, dtype=np.int32),
        **kwargs,  # type: ignore[arg-type]
    )
    return out.masks[0]


def test_one_positive_click_segments_a_disc() -> None:
    image, disc, _ = _scene()
    mask = _predict(image, [(60, 60)], [1])
    assert _iou(mask, disc) > 0.9


def test_negative_click_removes_a_false_positive() -> None:
    image, disc, square = _scene(blob=True)
    first = _predict(image, [(60, 60)], [1])
    assert (first & square).sum() > 0.5 * square.sum(), "the same-coloured square is taken first"

    fixed = _predict(image, [(60, 60), (130, 60)], [1, 0])
    assert (fixed & square).sum() < (first & square).sum()
    assert not fixed[60, 130]
    assert _iou(fixed, disc) > 0.9


def test_box_prompt_segments_inside_the_box_only() -> None:
    image, disc, _ = _scene(blob=True)
    predictor = GrabCutPredictor()
    predictor.set_image(image)
    mask = predictor.predict(box=np.array([25, 25, 96, 96], dtype=np.float32)).masks[0]
    assert _iou(mask, disc) > 0.9
    assert not mask[:, 96:].any() and not mask[:25].any()


def test_prediction_has_one_mask_no_iou_estimate_and_no_logits() -> None:
    image, _, _ = _scene()
    predictor = GrabCutPredictor()
    predictor.set_image(image)
    out = predictor.predict(np.array([[60.0, 60.0]]), np.array([1]), multimask_output=True)
    assert out.masks.shape == (1, H, W) and out.masks.dtype == bool
    assert out.iou_predictions.shape == (1,) and out.iou_predictions.dtype == np.float32
    assert np.isnan(out.iou_predictions).all()
    assert out.low_res_logits is None


def test_same_prompt_gives_the_same_mask() -> None:
    image, _, _ = _scene(blob=True)
    first = _predict(image, [(60, 60), (100, 30)], [1, 0])
    second = _predict(image, [(60, 60), (100, 30)], [1, 0])
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    ("points", "labels"),
    [([], []), ([(60, 60)], [0]), ([(10, 10), (100, 100)], [0, 0]), ([(60, 60)], [-1])],
    ids=["no-click", "one-negative", "two-negatives", "padding-point"],
)
def test_without_a_positive_click_or_box_the_mask_is_empty(
    points: list[tuple[float, float]], labels: list[int]
) -> None:
    image, _, _ = _scene()
    predictor = GrabCutPredictor()
    predictor.set_image(image)
    coords = np.array(points, dtype=np.float32).reshape(-1, 2) if points else None
    out = predictor.predict(coords, np.array(labels) if points else None)
    assert out.masks.shape == (1, H, W)
    assert not out.masks.any()


def test_one_colour_image_does_not_crash() -> None:
    image = np.full((H, W, 3), 128, dtype=np.uint8)
    mask = _predict(image, [(80, 60)], [1])
    assert mask.shape == (H, W)
    assert mask[60, 80], "the clicked pixel is definite foreground"


@pytest.mark.parametrize(
    "point", [(0, 0), (W - 1, H - 1), (W - 1, 0), (-4, 50), (W + 3, H + 3)], ids=str
)
def test_clicks_at_or_past_the_border_do_not_crash(point: tuple[float, float]) -> None:
    image, _, _ = _scene()
    mask = _predict(image, [point, (60, 60)], [1, 0])
    assert mask.shape == (H, W)


def test_tiny_image_covered_by_the_click_returns_the_seed() -> None:
    # The 5-px disc covers every pixel: GrabCut has no background sample and would assert.
    image = np.zeros((6, 6, 3), dtype=np.uint8)
    mask = _predict(image, [(3, 3)], [1])
    assert mask.all()


def test_seeds_follow_the_decided_drawing_order() -> None:
    # A negative click inside a later positive click's big disc stays definite background,
    # because all big discs are drawn before any 5-px disc.
    seeds = seed_mask(
        (H, W), point_coords=np.array([[70.0, 60.0], [60.0, 60.0]]), point_labels=np.array([0, 1])
    )
    assert seeds is not None
    assert seeds[60, 70] == cv2.GC_BGD
    assert seeds[60, 60] == cv2.GC_FGD
    big = round(BIG_DISC_FRACTION * min(H, W))
    assert seeds[60, 60 - big + 1] == cv2.GC_PR_FGD
    assert seeds[60, 60 - big - 2] == cv2.GC_PR_BGD


def test_predict_before_set_image_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="set_image"):
        GrabCutPredictor().predict(np.array([[1.0, 1.0]]), np.array([1]))

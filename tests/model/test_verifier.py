"""The learned mask verifier: its features mean what they say, it learns what reviewers
decide, its threshold reaches the target precision on held-out decisions, and it is compared
fairly with SA-1B's fixed filters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.verifier import (
    FEATURES,
    ImageContext,
    Verifier,
    compare_with_filters,
    mask_features,
    sa1b_filters,
    threshold_for_precision,
)

F = {name: i for i, name in enumerate(FEATURES)}


def disc(h: int = 120, w: int = 160, cx: float = 80, cy: float = 60, r: float = 30) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 < r**2


def photo_of(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """A bright object on a darker, slightly noisy background."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(40, 60, (*mask.shape, 3), dtype=np.uint8)
    rgb[mask] = 210
    return rgb


def features_of(mask: np.ndarray, context: ImageContext, **scores: float) -> np.ndarray:
    return mask_features(
        mask,
        context,
        predicted_iou=scores.get("iou", 0.9),
        stability_score=scores.get("stability", 0.96),
    )


def test_a_mask_on_the_object_follows_its_edges_and_a_shifted_one_does_not() -> None:
    truth = disc()
    context = ImageContext.from_image(photo_of(truth))
    good = features_of(truth, context)
    shifted = features_of(disc(cx=100), context)
    assert good[F["edge_on_boundary"]] > 3 * shifted[F["edge_on_boundary"]]
    assert good[F["edge_inside"]] < 0.5  # a flat inside
    assert good[F["compactness"]] > 0.85 and good[F["box_fill"]] == pytest.approx(np.pi / 4, 0.05)
    assert good[F["log_parts"]] == 0 and good[F["border_touch"]] == 0
    assert good[F["log_area_share"]] == pytest.approx(np.log10(truth.mean()), abs=1e-5)
    assert good[F["predicted_iou"]] == pytest.approx(0.9)


def test_shape_features_tell_parts_thin_strips_and_the_border() -> None:
    context = ImageContext.from_image(photo_of(disc()))
    two = disc(cx=30, r=15) | disc(cx=130, r=15)
    strip = np.zeros((120, 160), dtype=bool)
    strip[0:3, :] = True
    assert features_of(two, context)[F["log_parts"]] == pytest.approx(np.log(2))
    thin = features_of(strip, context)
    assert thin[F["compactness"]] < 0.1 and thin[F["border_touch"]] == 0.75
    empty = mask_features(
        np.zeros((120, 160), bool), context, predicted_iou=None, stability_score=None
    )
    assert np.isfinite(empty).all() and empty[F["predicted_iou"]] == 0


def test_embedding_features_see_an_object_that_differs_from_its_surroundings() -> None:
    # A 16x16 grid over a 64 px padded input holding a 64x48 image: an object's cells point
    # one way, the background's another (with noise).
    rng = np.random.default_rng(1)
    grid = rng.normal(0, 0.1, (8, 16, 16)).astype(np.float32)
    grid[0] += 1.0
    grid[1, 4:8, 4:10] += 3.0  # the object: rows 4-7, columns 4-9 of the grid
    truth = np.zeros((48, 64), dtype=bool)
    truth[16:32, 16:40] = True  # the same place in image pixels (4 px per cell)
    context = ImageContext.from_image(photo_of(truth), grid, input_size=(48, 64), image_size=64)
    on = features_of(truth, context)
    beside = np.zeros_like(truth)
    beside[16:32, 40:64] = True
    off = features_of(beside, context)
    assert on[F["embedding_contrast"]] > 0.5 > off[F["embedding_contrast"]]
    assert on[F["embedding_homogeneity"]] > 0.9
    with pytest.raises(ValueError, match="image_size"):
        ImageContext.from_image(photo_of(truth), grid)


def test_threshold_for_precision_is_the_lowest_that_reaches_the_target() -> None:
    p = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    y = np.array([1, 1, 1, 0, 1, 0], dtype=bool)
    assert threshold_for_precision(p, y, 0.75, min_accepted=1) == 0.6  # 4 of 5
    assert threshold_for_precision(p, y, 1.0, min_accepted=1) == 0.8
    assert threshold_for_precision(p, y, 1.0, min_accepted=4) is None
    ties = np.array([0.9, 0.9, 0.9])
    assert threshold_for_precision(ties, np.array([1, 1, 0], bool), 1.0, min_accepted=1) is None


def reviewer_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidates whose model scores are all high (they passed loose filters) and whose
    acceptance depends on how well the boundary follows edges, as with a real reviewer."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, len(FEATURES)), dtype=np.float32)
    x[:, F["predicted_iou"]] = rng.uniform(0.5, 1.0, n)
    x[:, F["stability_score"]] = rng.uniform(0.8, 1.0, n)
    x[:, F["edge_on_boundary"]] = rng.gamma(2.0, 1.0, n)
    x[:, F["compactness"]] = rng.uniform(0, 1, n)
    logit = 3.0 * (x[:, F["edge_on_boundary"]] - 1.5) + 2.0 * (x[:, F["predicted_iou"]] - 0.75)
    accepted = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    return x, accepted


@pytest.mark.parametrize("hidden", [0, 8], ids=["logistic", "mlp"])
def test_it_learns_what_reviewers_decide_and_beats_the_fixed_filters(hidden: int) -> None:
    x_train, y_train = reviewer_data(600, seed=0)
    x_cal, y_cal = reviewer_data(400, seed=1)
    x_test, y_test = reviewer_data(400, seed=2)
    verifier = Verifier(hidden=hidden).fit(x_train, y_train)
    p = verifier.probabilities(x_test)
    ranked = y_test[np.argsort(-p)]
    assert ranked[:100].mean() > 0.9 > y_test.mean()  # its surest quarter is mostly accepted
    figures = verifier.calibrate(x_cal, y_cal, target=0.94)
    assert figures["precision"] >= 0.94 and figures["accepted_share"] > 0.2
    result = compare_with_filters(verifier, x_test, y_test)
    assert result["verifier"]["precision"] >= 0.9  # near the target on unseen candidates
    assert result["verifier"]["accepted_share"] > result["filters"]["accepted_share"]
    assert result["better"] == (result["verifier"]["precision"] >= 0.94)


def test_it_round_trips_as_json_and_refuses_what_it_cannot_use() -> None:
    x, y = reviewer_data(300, seed=3)
    verifier = Verifier(hidden=4).fit(x, y)
    assert not verifier.accepts(x).any()  # not calibrated: it accepts nothing
    verifier.calibrate(x, y, target=0.9)
    again = Verifier.from_dict(json.loads(json.dumps(verifier.to_dict())))
    np.testing.assert_allclose(again.probabilities(x), verifier.probabilities(x), atol=1e-6)
    assert (again.accepts(x) == verifier.accepts(x)).all()
    stale = {**verifier.to_dict(), "features": ["predicted_iou"]}
    with pytest.raises(ValueError, match="other features"):
        Verifier.from_dict(stale)
    with pytest.raises(ValueError, match="both accepted and rejected"):
        Verifier().fit(x, np.ones(len(x), dtype=bool))
    with pytest.raises(ValueError, match="not trained"):
        Verifier().probabilities(x)


def test_the_fixed_filters_are_sa1b_s() -> None:
    kept = sa1b_filters(np.array([0.89, 0.88, 0.95, 0.99]), np.array([0.95, 0.99, 0.94, 1.0]))
    assert kept.tolist() == [True, False, False, True]

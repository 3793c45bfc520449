"""ZoomInPredictor: the first click on the whole image, later ones on a crop around the object
embedded at the model's full input size; crops reused while they still fit; logits that
survive the trip between frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.build import build_sam
from model.predictor import SamPredictor
from model.zoom import (
    OUTSIDE_LOGIT,
    ZoomInPredictor,
    ZoomSettings,
    _Frame,
    object_box,
    resample,
)

SETTINGS = ZoomSettings(min_crop=40)


def _image(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=-1)
    # A bright square: something object-like for the model to find.
    base[100:140, 200:250] = 250
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def _square_logits() -> np.ndarray:
    """Whole-image logits in the zoom frame (128 px model, 400 px image: 0.32 per pixel):
    positive over the bright square (200..250, 100..140)."""
    logits = np.full((1, 128, 128), -8.0, dtype=np.float32)
    logits[0, 32:45, 64:80] = 8.0
    return logits


class CountingPredictor(SamPredictor):
    """Counts encoder passes: what a click costs the user."""

    encoded = 0

    def set_image(self, image: np.ndarray) -> None:
        CountingPredictor.encoded += 1
        super().set_image(image)


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    return build_sam("vit_tiny_test")


@pytest.fixture()
def zoom(sam) -> ZoomInPredictor:
    base = SamPredictor(sam, device="cpu")
    z = ZoomInPredictor(base, SETTINGS)
    z.crop = CountingPredictor(sam, device="cpu")
    CountingPredictor.encoded = 0
    z.set_image(_image(300, 400))
    return z


def test_object_box_is_the_expanded_union_of_mask_and_clicks_clamped_to_the_image():
    positives = np.array([[220.0, 120.0]])
    box = object_box((200, 100, 250, 140), positives, (300, 400), ZoomSettings(min_crop=10))
    # 50x40 -> 70x56 around the centre (225, 120).
    assert box == (190, 92, 260, 148)
    # At least min_crop a side, and never past the image's edge.
    small = object_box(None, np.array([[5.0, 5.0]]), (300, 400), ZoomSettings(min_crop=100))
    assert small == (0, 0, 56, 56)  # the click covers pixel 5: centre 5.5


def test_resample_round_trip_keeps_logits_inside_the_crop_and_marks_the_rest_outside():
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    full = ((xx - 60) / 10 + (yy - 40) / 20)[None]  # smooth: bilinear round trips are exact
    full_frame = _Frame(0.0, 0.0, 128 / 400)
    crop_frame = _Frame(160.0, 80.0, 128 / 100 / 4)
    in_crop = resample(full, full_frame, (96, 128), (32, 32), crop_frame)
    back = resample(in_crop, crop_frame, (32, 32), (128, 128), full_frame)
    # The crop (160..260, 80..180) is full-frame pixels 51..83 x 25..57.
    inner = (slice(0, 1), slice(27, 55), slice(53, 81))
    assert torch.allclose(back[inner], full[inner], atol=0.05)
    assert (back[:, :, :45] == OUTSIDE_LOGIT).all()
    assert (back[:, 70:, :] == OUTSIDE_LOGIT).all()


def test_first_click_is_answered_on_the_whole_image_as_sam_would(zoom, sam):
    point = np.array([[225.0, 120.0]])
    out = zoom.predict(point, np.array([1]))
    plain = SamPredictor(sam, device="cpu")
    plain.set_image(_image(300, 400))
    expected = plain.predict(point, np.array([1]))
    assert np.array_equal(out.masks, expected.masks)
    assert np.allclose(out.iou_predictions, expected.iou_predictions)
    assert out.low_res_logits.shape == (3, 128, 128)  # whole image, model input size
    assert CountingPredictor.encoded == 0  # no crop for one click


def test_later_clicks_zoom_in_and_reuse_the_crop_while_it_fits(zoom):
    clicks = [[225.0, 120.0, 1], [205.0, 105.0, 1], [240.0, 135.0, 0], [230.0, 110.0, 1]]
    # The previous answer, as the page sends it back: the bright square (a random model's own
    # masks are anywhere).
    previous = _square_logits()
    answers = []
    for k in range(1, len(clicks) + 1):
        points = np.array([c[:2] for c in clicks[:k]])
        labels = np.array([c[2] for c in clicks[:k]], dtype=int)
        mask_input = None if k == 1 else previous
        answers.append(zoom.predict(points, labels, mask_input=mask_input, multimask_output=k == 1))
    crop = zoom._crop_box
    assert crop is not None
    x0, y0, x1, y1 = crop
    assert x0 <= 205 and x1 > 240 and y0 <= 105 and y1 > 135
    assert (x1 - x0, y1 - y0) != (400, 300)
    # One encoder pass for the crop, shared by clicks 2 to 4.
    assert CountingPredictor.encoded == 1
    last = answers[-1].masks[0]
    outside = np.ones_like(last)
    outside[y0:y1, x0:x1] = False
    assert not last[outside].any()
    assert last.shape == (300, 400)


def test_a_positive_click_outside_the_crop_moves_it(zoom):
    points = np.array([[225.0, 120.0], [230.0, 125.0]])
    zoom.predict(points, np.array([1, 1]), mask_input=_square_logits(), multimask_output=False)
    first = zoom._crop_box
    assert first is not None and first[0] > 100
    far = np.vstack([points, [[150.0, 160.0]]])
    zoom.predict(far, np.array([1, 1, 1]), mask_input=_square_logits(), multimask_output=False)
    second = zoom._crop_box
    assert second is not None and second[0] <= 150 < second[2] and second[1] <= 160 < second[3]
    assert CountingPredictor.encoded == 2


def test_negative_clicks_far_outside_the_crop_are_left_out_not_an_error(zoom):
    points = np.array([[225.0, 120.0], [230.0, 125.0], [390.0, 290.0]])
    out = zoom.predict(points, np.array([1, 1, 0]), multimask_output=False)
    assert zoom._crop_box is not None
    assert out.masks.shape == (1, 300, 400)


def test_sam_low_res_logits_are_accepted_as_mask_input(zoom):
    low = np.full((1, 32, 32), -5.0, dtype=np.float32)
    low[0, 8:12, 15:20] = 5.0
    out = zoom.predict(np.array([[225.0, 120.0], [230.0, 125.0]]), np.array([1, 1]), mask_input=low)
    assert out.masks.shape == (3, 300, 400)


def test_without_pixels_it_answers_as_the_plain_predictor(sam):
    base = SamPredictor(sam, device="cpu")
    base.set_image(_image(300, 400))
    embedding = base.get_embedding()
    zoom = ZoomInPredictor(SamPredictor(sam, device="cpu"), SETTINGS)
    zoom.set_embedding(embedding)
    points, labels = np.array([[225.0, 120.0], [230.0, 125.0]]), np.array([1, 1])
    out = zoom.predict(points, labels)
    assert np.array_equal(out.masks, base.predict(points, labels).masks)
    loads = []
    zoom.set_pixels(lambda: loads.append(1) or _image(300, 400))
    zoom.predict(points[:1], labels[:1])
    assert loads == []  # one click needs no crop: the image is not even decoded
    zoom.predict(points, labels)
    assert zoom._crop_box is not None and loads == [1]


def test_pixels_of_another_size_are_refused(sam):
    zoom = ZoomInPredictor(SamPredictor(sam, device="cpu"), SETTINGS)
    zoom.set_image(_image(300, 400))
    with pytest.raises(ValueError, match="pixels"):
        zoom.set_pixels(_image(200, 400))
    zoom.set_pixels(lambda: _image(200, 400))
    with pytest.raises(ValueError, match="pixels"):
        zoom.predict(np.array([[225.0, 120.0], [230.0, 125.0]]), np.array([1, 1]))

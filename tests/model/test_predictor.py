"""SamPredictor: sizes, coordinate mapping, parity with Meta's SamPredictor, embedding
caching through bytes, batched prompts; plus the ResizeLongestSide transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model.build import CONFIGS, build_sam
from model.checkpoints import load_checkpoint
from model.predictor import ImageEmbedding, SamPredictor
from model.sam import Sam
from model.transforms import ResizeLongestSide
from model.types import Prediction
from tests.model import reference as ref

TINY = CONFIGS["vit_tiny_test"]
LOW_RES = 4 * TINY.sam.embedding_side


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth content, so that the resize and the model see structure rather than noise.
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=-1)
    return np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, Sam]:
    # Meta's default init draws from the global RNG: fix it, so that the weights (and the
    # float32 rounding the comparisons meet) do not depend on which tests ran before.
    with torch.random.fork_rng():
        torch.manual_seed(11)
        meta = ref.randomize_(ref.build_meta_sam(TINY), seed=11)
    ours = build_sam("vit_tiny_test")
    load_checkpoint(ours, meta.state_dict())
    return meta, ours


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return _image(70, 150)  # landscape: resized to 60x128, padded below


@pytest.fixture(scope="module")
def predictor(models, image) -> SamPredictor:
    p = SamPredictor(models[1], device="cpu")
    p.set_image(image)
    return p


@pytest.fixture(scope="module")
def meta_predictor(models, image):
    p = ref.predictor_class()(models[0])
    p.set_image(image)
    return p


def test_masks_come_back_at_the_original_size(predictor: SamPredictor) -> None:
    multi = predictor.predict(np.array([[30.0, 40.0]]), np.array([1]))
    assert isinstance(multi, Prediction)
    assert multi.masks.shape == (3, 70, 150) and multi.masks.dtype == bool
    assert multi.iou_predictions.shape == (3,) and multi.iou_predictions.dtype == np.float32
    assert multi.low_res_logits is not None
    assert multi.low_res_logits.shape == (3, LOW_RES, LOW_RES)
    assert multi.low_res_logits.dtype == np.float32
    single = predictor.predict(box=np.array([10, 5, 90, 60]), multimask_output=False)
    assert single.masks.shape == (1, 70, 150)
    assert predictor.input_size == (60, 128) and predictor.original_size == (70, 150)


def test_portrait_images_too(models) -> None:
    p = SamPredictor(models[1], device="cpu")
    p.set_image(_image(151, 33, seed=2))
    assert p.input_size == (128, 28)
    assert p.predict(np.array([[5.0, 140.0]]), np.array([1])).masks.shape == (3, 151, 33)


def test_points_are_mapped_into_the_resized_frame(
    predictor: SamPredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {}
    decode = predictor.model.decode

    def spy(embedding, **kwargs):
        seen.update(kwargs)
        return decode(embedding, **kwargs)

    monkeypatch.setattr(predictor.model, "decode", spy)
    predictor.predict(
        np.array([[149.0, 69.0], [0.0, 0.0]]), np.array([1, 0]), box=np.array([15, 7, 75, 35])
    )
    coords, labels = seen["points"]
    # 150x70 -> 128x60: x scales by 128/150, y by 60/70.
    expected = torch.tensor([[[149 * 128 / 150, 69 * 60 / 70], [0.0, 0.0]]])
    torch.testing.assert_close(coords, expected)
    assert labels.tolist() == [[1, 0]]
    torch.testing.assert_close(
        seen["boxes"], torch.tensor([[15 * 128 / 150, 7 * 60 / 70, 75 * 128 / 150, 30.0]])
    )


PROMPTS = {
    "one click": {"point_coords": np.array([[60.0, 30.0]]), "point_labels": np.array([1])},
    "clicks": {
        "point_coords": np.array([[60.0, 30.0], [140.0, 5.0], [3.0, 66.0]]),
        "point_labels": np.array([1, 0, 1]),
    },
    "box": {"box": np.array([20.0, 10.0, 120.0, 55.0])},
    "box and click": {
        "box": np.array([20.0, 10.0, 120.0, 55.0]),
        "point_coords": np.array([[60.0, 30.0]]),
        "point_labels": np.array([0]),
    },
}


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_predict_matches_metas_predictor(
    predictor: SamPredictor, meta_predictor, prompt: str, multimask: bool
) -> None:
    kwargs = dict(PROMPTS[prompt], multimask_output=multimask)
    ours = predictor.predict(**kwargs)
    logits, iou, low_res = meta_predictor.predict(**kwargs, return_logits=True)
    ref.assert_close_scaled(ours.low_res_logits, low_res, what="low-res logits")
    ref.assert_iou_close(ours.iou_predictions, iou)
    confident = np.abs(logits) > 1e-4 * np.abs(logits).max()
    assert np.array_equal(ours.masks[confident], logits[confident] > 0)

    # Feeding the best low-res mask back in, as the annotation loop does.
    best = int(np.argmax(ours.iou_predictions))
    assert ours.low_res_logits is not None
    again = predictor.predict(**kwargs | {"mask_input": ours.low_res_logits[best][None]})
    _, _, low_res_again = meta_predictor.predict(
        **kwargs | {"mask_input": low_res[best][None]}, return_logits=True
    )
    ref.assert_close_scaled(again.low_res_logits, low_res_again, what="with mask input")


def test_embedding_round_trips_through_bytes(models, predictor: SamPredictor) -> None:
    emb = predictor.get_embedding()
    assert emb.embedding.shape == (1, TINY.sam.prompt_embed_dim, 8, 8)
    restored = ImageEmbedding.from_bytes(emb.to_bytes())
    assert restored.original_size == (70, 150) and restored.input_size == (60, 128)

    other = SamPredictor(models[1], device="cpu")
    other.set_embedding(restored)
    for kwargs in PROMPTS.values():
        a, b = predictor.predict(**kwargs), other.predict(**kwargs)
        assert np.array_equal(a.masks, b.masks)
        assert np.array_equal(a.iou_predictions, b.iou_predictions)
        assert np.array_equal(a.low_res_logits, b.low_res_logits)


def test_embeddings_can_be_stored_as_float16(models, predictor: SamPredictor) -> None:
    emb = predictor.get_embedding()
    data = emb.to_bytes(half=True)
    assert len(data) < 0.6 * len(emb.to_bytes())
    restored = ImageEmbedding.from_bytes(data)
    assert restored.embedding.dtype == torch.float16
    assert restored.to_bytes() == data  # stays float16, byte for byte

    direct, via_bytes = SamPredictor(models[1], device="cpu"), SamPredictor(models[1])
    direct.set_embedding(emb.half())
    via_bytes.set_embedding(restored)
    kwargs = PROMPTS["clicks"]
    assert np.array_equal(direct.predict(**kwargs).masks, via_bytes.predict(**kwargs).masks)
    ref.assert_close_scaled(
        via_bytes.predict(**kwargs).low_res_logits,
        predictor.predict(**kwargs).low_res_logits,
        tol=1e-2,
        what="float16 embedding",
    )


def test_set_embedding_refuses_what_does_not_fit(models, predictor: SamPredictor) -> None:
    emb = predictor.get_embedding()
    p = SamPredictor(models[1], device="cpu")
    with pytest.raises(ValueError, match="this model needs"):
        p.set_embedding(ImageEmbedding(torch.zeros(1, 256, 64, 64), (70, 150), (60, 128)))
    with pytest.raises(ValueError, match="does not follow"):
        p.set_embedding(ImageEmbedding(emb.embedding, (70, 150), (480, 1024)))
    with pytest.raises(ValueError, match="not a serialised image embedding"):
        ImageEmbedding.from_bytes(b"definitely not an npz")
    assert not p.is_image_set


def test_predict_batch_equals_one_by_one(predictor: SamPredictor) -> None:
    rng = np.random.default_rng(4)
    coords = rng.uniform(0, [150, 70], size=(5, 2, 2))
    labels = rng.integers(0, 2, size=(5, 2))
    x0y0 = rng.uniform(0, [75, 35], size=(5, 2))
    boxes = np.concatenate([x0y0, x0y0 + [60, 30]], axis=1)

    batched = predictor.predict_batch(coords, labels, boxes)
    assert len(batched) == 5
    for i, got in enumerate(batched):
        alone = predictor.predict(coords[i], labels[i], boxes[i])
        ref.assert_close_scaled(got.low_res_logits, alone.low_res_logits, what=f"prompt {i}")
        ref.assert_close_scaled(got.iou_predictions, alone.iou_predictions, what=f"iou {i}")
        assert (got.masks != alone.masks).mean() < 1e-3


def test_predict_torch_returns_logits_on_request(predictor: SamPredictor) -> None:
    coords = torch.tensor([[[40.0, 20.0]], [[100.0, 50.0]]])
    labels = torch.ones((2, 1), dtype=torch.int)
    masks, iou, low_res = predictor.predict_torch(coords, labels, return_logits=True)
    assert masks.dtype == torch.float32 and masks.shape == (2, 3, 70, 150)
    assert iou.shape == (2, 3) and low_res.shape == (2, 3, LOW_RES, LOW_RES)


def test_it_needs_an_image_first(models) -> None:
    p = SamPredictor(models[1], device="cpu")
    with pytest.raises(RuntimeError, match="set an image"):
        p.predict(np.array([[1.0, 1.0]]), np.array([1]))
    with pytest.raises(ValueError, match="uint8"):
        p.set_image(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="go together"):
        p.predict_batch(point_coords=np.zeros((1, 1, 2)))


# -- transforms ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(70, 150), (151, 33), (128, 128), (1000, 999), (3, 1)])
def test_transform_coordinates_match_metas(size: tuple[int, int]) -> None:
    meta = ref.transforms_module().ResizeLongestSide(128)
    ours = ResizeLongestSide(128)
    coords = np.random.default_rng(0).uniform(0, 200, size=(4, 3, 2))
    boxes = coords.reshape(-1, 4)[:3]
    assert ours.get_preprocess_shape(*size, 128) == meta.get_preprocess_shape(*size, 128)
    assert np.array_equal(ours.apply_coords(coords, size), meta.apply_coords(coords, size))
    assert np.array_equal(ours.apply_boxes(boxes, size), meta.apply_boxes(boxes, size))
    coords_t = torch.from_numpy(coords).float()
    assert torch.equal(
        ours.apply_coords_torch(coords_t, size), meta.apply_coords_torch(coords_t, size)
    )
    assert torch.equal(
        ours.apply_boxes_torch(coords_t.reshape(-1, 4), size),
        meta.apply_boxes_torch(coords_t.reshape(-1, 4), size),
    )


def test_transform_image_is_pillow_bilinear() -> None:
    """torchvision's ``resize(to_pil_image(x), (h, w))`` on a uint8 HxWx3 array is
    ``Image.fromarray(x).resize((w, h), BILINEAR)`` (torchvision/transforms/functional.py
    and _functional_pil.py); Meta's predictor feeds the encoder exactly these bytes."""
    image = _image(70, 150)
    out = ResizeLongestSide(128).apply_image(image)
    expected = np.array(Image.fromarray(image).resize((128, 60), Image.Resampling.BILINEAR))
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    same = _image(128, 40)
    assert np.array_equal(ResizeLongestSide(128).apply_image(same), same)
    # A non-contiguous view (e.g. BGR -> RGB by slicing) is handled too.
    flipped = image[..., ::-1]
    assert np.array_equal(
        ResizeLongestSide(128).apply_image(flipped),
        np.array(Image.fromarray(flipped.copy()).resize((128, 60), Image.Resampling.BILINEAR)),
    )

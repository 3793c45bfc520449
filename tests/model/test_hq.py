"""HQ-SAM beyond parity: configurations, loading official / plain checkpoints, the predictor
and its cached embeddings (with the early feature), the automatic stage."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from model.build import available, build_sam
from model.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from model.mask_decoder_hq import HQ_PREFIXES
from model.predictor import ImageEmbedding, SamPredictor
from model.sam import Sam
from tests.model import reference as ref
from tests.model import reference_hq as ref_hq
from tests.model.test_hq_parity import TINY


def _image(h: int = 70, w: int = 150, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=-1)
    return np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def hq_model() -> Sam:
    with torch.random.fork_rng():  # the default init draws from the global RNG
        torch.manual_seed(31)
        sam = build_sam("vit_tiny_test_hq")
    ref.randomize_(sam, seed=31)
    return sam


@pytest.fixture(scope="module")
def hq_predictor(hq_model: Sam) -> SamPredictor:
    predictor = SamPredictor(hq_model, device="cpu")
    predictor.set_image(_image())
    return predictor


# --------------------------------------------------------------------------- configurations


def test_every_configuration_has_an_hq_twin() -> None:
    names = set(available())
    plain = {n for n in names if not n.endswith("_hq")}
    assert {f"{n}_hq" for n in plain} == names - plain
    assert {"vit_b_hq", "vit_l_hq", "vit_h_hq", "vit_t_hq", "efficientnet_lite0_384_hq"} <= names


def test_the_hq_twin_adds_only_the_hq_parts() -> None:
    plain = build_sam("vit_tiny_test").state_dict()
    hq = build_sam("vit_tiny_test_hq").state_dict()
    added = hq.keys() - plain.keys()
    assert plain.keys() <= hq.keys()
    assert added and all(k.startswith(HQ_PREFIXES) for k in added)
    assert {k.split(".")[1] for k in added} == {p.split(".")[1] for p in HQ_PREFIXES}


def test_efficientnet_hq_fuses_the_stride_8_feature() -> None:
    """DECISIONS 6: the early feature is the backbone's stride-8 output, already at twice the
    embedding's resolution, so its projection's first layer is a 1x1 convolution."""
    sam = build_sam("efficientnet_lite0_256_hq")
    assert sam.is_hq and sam.early_shape == (32, 32, 40)
    state = sam.state_dict()
    assert state["mask_decoder.compress_vit_feat.0.weight"].shape == (256, 40, 1, 1)
    assert state["mask_decoder.compress_vit_feat.3.weight"].shape == (256, 32, 2, 2)
    base = set(build_sam("efficientnet_lite0_256").state_dict())
    assert {k for k in state if not k.startswith(HQ_PREFIXES)} == base
    with torch.no_grad():
        emb, early = sam.encode_image_with_early(torch.rand(1, 3, 256, 200) * 255)
        assert early is not None and early.shape == (1, 32, 32, 40)
        points = (torch.tensor([[[100.0, 80.0]]]), torch.tensor([[1]]))
        low, iou = sam.decode(emb, points=points, early_features=early)
        hq_alone, _ = sam.decode(emb, points=points, early_features=early, hq_only=True)
    assert low.shape == hq_alone.shape == (1, 1, 64, 64) and iou.shape == (1, 1)
    assert not torch.equal(low, hq_alone)


def test_plain_models_refuse_hq_arguments() -> None:
    sam = build_sam("vit_tiny_test")
    assert not sam.is_hq and sam.early_shape is None
    emb = torch.zeros(1, 32, 8, 8)
    with pytest.raises(ValueError, match="plain SAM"):
        sam.decode(emb, hq_only=True)
    with pytest.raises(ValueError, match="plain SAM"):
        sam.decode(emb, early_features=torch.zeros(1, 8, 8, 32))
    with pytest.raises(ValueError, match="HQ-SAM"):
        SamPredictor(sam, device="cpu", hq_only=True)


def test_hq_decoding_needs_the_early_feature(hq_model: Sam) -> None:
    with pytest.raises(ValueError, match="early_features or hq_features"):
        hq_model.decode(torch.zeros(1, 32, 8, 8))


# --------------------------------------------------------------------------- checkpoints


def test_an_official_hq_file_loads_unchanged(tmp_path: Path) -> None:
    """An official file is a raw state dict of the official modules: saved from the reference
    code, it loads with torch.load(weights_only=True) through the strict loader."""
    theirs = ref.randomize_(ref_hq.build_reference_hq_sam(TINY), seed=3)
    path = tmp_path / "sam_hq_tiny.pth"
    torch.save(theirs.state_dict(), path)
    ours = build_sam("vit_tiny_test_hq", checkpoint=path)
    for key, tensor in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], tensor), key


def test_wrong_hq_shapes_and_unexpected_keys_are_clear_errors(hq_model: Sam) -> None:
    state = hq_model.state_dict()
    wrong = dict(state)
    wrong["mask_decoder.compress_vit_feat.0.weight"] = torch.zeros(768, 32, 2, 2)
    with pytest.raises(CheckpointError, match=r"compress_vit_feat\.0\.weight \(checkpoint 768x"):
        load_checkpoint(build_sam("vit_tiny_test_hq"), wrong)
    extra = dict(state, **{"mask_decoder.hf_token2.weight": torch.zeros(1, 32)})
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\): mask_decoder\.hf_token2"):
        load_checkpoint(build_sam("vit_tiny_test_hq"), extra)
    # An HQ checkpoint is not a plain SAM one: its HQ keys are unexpected there.
    with pytest.raises(CheckpointError, match="unexpected key.*mask_decoder.hf_token.weight"):
        load_checkpoint(build_sam("vit_tiny_test"), state)


def test_a_plain_checkpoint_starts_hq_only_when_asked(tmp_path: Path) -> None:
    plain = ref.randomize_(build_sam("vit_tiny_test"), seed=8)
    path = save_checkpoint(tmp_path / "plain.pt", plain, {"name": "vit_tiny_test"})
    with pytest.raises(CheckpointError, match="missing key.*mask_decoder.hf_token.weight"):
        build_sam("vit_tiny_test_hq", checkpoint=path)

    hq = build_sam("vit_tiny_test_hq")
    before = {k: v.clone() for k, v in hq.state_dict().items()}
    meta = load_checkpoint(hq, path, allow_missing_prefixes=HQ_PREFIXES)
    fresh = meta["fresh_keys"]
    assert fresh and all(k.startswith(HQ_PREFIXES) for k in fresh)
    assert set(fresh) == set(hq.state_dict()) - set(plain.state_dict())
    for key, tensor in hq.state_dict().items():
        expected = before[key] if key in fresh else plain.state_dict()[key]
        assert torch.equal(tensor, expected), key
    built = build_sam("vit_tiny_test_hq", path, allow_missing_prefixes=HQ_PREFIXES)
    key = "mask_decoder.iou_token.weight"
    assert torch.equal(built.state_dict()[key], plain.state_dict()[key])


def test_half_an_hq_part_is_still_an_error() -> None:
    """The permission covers whole parts: a checkpoint holding some of a part's keys but not
    all is a broken file, not a plain SAM one."""
    state = ref.randomize_(build_sam("vit_tiny_test_hq"), seed=2).state_dict()
    partial = {k: v for k, v in state.items() if k != "mask_decoder.hf_mlp.layers.2.bias"}
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): mask_decoder\.hf_mlp"):
        load_checkpoint(build_sam("vit_tiny_test_hq"), partial, allow_missing_prefixes=HQ_PREFIXES)


# --------------------------------------------------------------------------- predictor


def test_the_predictor_answers_one_mask_as_the_model(
    hq_predictor: SamPredictor, hq_model: Sam
) -> None:
    answer = hq_predictor.predict(np.array([[60.0, 30.0]]), np.array([1]))
    assert answer.masks.shape == (1, 70, 150) and answer.iou_predictions.shape == (1,)
    assert answer.low_res_logits is not None and answer.low_res_logits.shape == (1, 32, 32)
    # The same as the end-to-end model on the same resized image and prompt.
    image = torch.as_tensor(hq_predictor.transform.apply_image(_image())).permute(2, 0, 1)
    coords = hq_predictor.transform.apply_coords(np.array([[60.0, 30.0]]), (70, 150))
    record = {
        "image": image.float(),
        "original_size": (70, 150),
        "point_coords": torch.as_tensor(coords, dtype=torch.float)[None],
        "point_labels": torch.tensor([[1]]),
    }
    with torch.no_grad():
        expected = hq_model([record], multimask_output=True)[0]
    ref.assert_close_scaled(answer.low_res_logits, expected["low_res_logits"][0], what="logits")
    ref.assert_iou_close(answer.iou_predictions, expected["iou_predictions"][0])


def test_hq_only_is_the_hq_mask_alone(hq_predictor: SamPredictor) -> None:
    box = np.array([20.0, 10.0, 120.0, 55.0])
    both = hq_predictor.predict(box=box, multimask_output=False)
    alone = hq_predictor.predict(box=box, multimask_output=False, hq_only=True)
    assert both.low_res_logits is not None and alone.low_res_logits is not None
    assert not np.allclose(both.low_res_logits, alone.low_res_logits)
    default_alone = SamPredictor(hq_predictor.model, device="cpu", hq_only=True)
    default_alone.set_embedding(hq_predictor.get_embedding())
    again = default_alone.predict(box=box, multimask_output=False)
    assert again.low_res_logits is not None
    np.testing.assert_allclose(again.low_res_logits, alone.low_res_logits, rtol=1e-5, atol=1e-5)


def test_hq_off_is_exactly_the_base_model_it_was_trained_on(tmp_path: Path) -> None:
    """The page's "HQ off" (``sam_only``): an HQ model started from a plain checkpoint answers
    as that plain model did, three masks and all, whatever its HQ parts hold."""
    plain = ref.randomize_(build_sam("vit_tiny_test"), seed=11)
    path = save_checkpoint(tmp_path / "plain.pt", plain, {"name": "vit_tiny_test"})
    hq = build_sam("vit_tiny_test_hq", path, allow_missing_prefixes=HQ_PREFIXES)
    ref.randomize_(hq.mask_decoder.hf_mlp, seed=3)  # HQ parts trained: they must not matter
    base, off = SamPredictor(plain, device="cpu"), SamPredictor(hq, device="cpu")
    base.set_image(_image())
    off.set_image(_image())
    prompt = {"point_coords": np.array([[60.0, 30.0], [3.0, 66.0]]), "point_labels": [1, 0]}
    for multimask in (True, False):
        want = base.predict(**prompt, multimask_output=multimask)
        got = off.predict(**prompt, multimask_output=multimask, sam_only=True)
        assert got.masks.shape == want.masks.shape == ((3 if multimask else 1), 70, 150)
        np.testing.assert_allclose(got.low_res_logits, want.low_res_logits, atol=1e-5)
        np.testing.assert_allclose(got.iou_predictions, want.iou_predictions, atol=1e-6)
    with_hq = off.predict(**prompt, multimask_output=False)  # SAM's mask + the HQ mask
    assert not np.allclose(with_hq.low_res_logits, want.low_res_logits, atol=1e-3)
    with pytest.raises(ValueError, match="exclude each other"):
        off.predict(**prompt, sam_only=True, hq_only=True)
    with pytest.raises(ValueError, match="HQ-SAM"):
        base.predict(**prompt, sam_only=True)


PROMPTS = [
    {"point_coords": np.array([[60.0, 30.0], [3.0, 66.0]]), "point_labels": np.array([1, 0])},
    {"box": np.array([20.0, 10.0, 120.0, 55.0]), "multimask_output": False},
    {"box": np.array([20.0, 10.0, 120.0, 55.0]), "hq_only": True},
]


@pytest.mark.parametrize("half", [False, True], ids=["float32", "float16"])
def test_a_restored_embedding_predicts_as_set_image(
    hq_predictor: SamPredictor, hq_model: Sam, half: bool
) -> None:
    stored = hq_predictor.get_embedding().to_bytes(half=half)
    restored = ImageEmbedding.from_bytes(stored)
    assert restored.early is not None and restored.early.shape == (1, 8, 8, 32)
    assert restored.early.dtype == (torch.float16 if half else torch.float32)
    other = SamPredictor(hq_model, device="cpu")
    other.set_embedding(restored)
    for prompt in PROMPTS:
        want = hq_predictor.predict(**prompt)  # type: ignore[arg-type]
        got = other.predict(**prompt)  # type: ignore[arg-type]
        assert want.low_res_logits is not None and got.low_res_logits is not None
        if half:
            ref.assert_close_scaled(got.low_res_logits, want.low_res_logits, tol=2e-2)
        else:
            np.testing.assert_array_equal(got.low_res_logits, want.low_res_logits)
            np.testing.assert_array_equal(got.masks, want.masks)


def test_embedding_bytes_round_trip_with_the_early_feature(hq_predictor: SamPredictor) -> None:
    embedding = hq_predictor.get_embedding()
    restored = ImageEmbedding.from_bytes(embedding.to_bytes())
    assert embedding.early is not None and restored.early is not None
    assert torch.equal(restored.embedding, embedding.embedding)
    assert torch.equal(restored.early, embedding.early)
    assert (restored.original_size, restored.input_size) == ((70, 150), (60, 128))
    with np.load(io.BytesIO(embedding.to_bytes()), allow_pickle=False) as npz:
        assert int(npz["format_version"]) == ImageEmbedding.HQ_FORMAT_VERSION
    assert embedding.half().nbytes == embedding.nbytes // 2


def test_plain_embeddings_keep_the_version_1_format() -> None:
    """Bytes of a plain SAM embedding are what they were before HQ-SAM, both ways."""
    emb = torch.randn(1, 32, 8, 8)
    plain = ImageEmbedding(emb, (70, 150), (60, 128))
    data = plain.to_bytes(half=True)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        assert sorted(npz.files) == ["embedding", "format_version", "input_size", "original_size"]
        assert int(npz["format_version"]) == 1
    # Written the way the pre-HQ code wrote it:
    buf = io.BytesIO()
    np.savez(
        buf,
        format_version=np.array(1, dtype=np.int64),
        embedding=emb.half().numpy(),
        original_size=np.array((70, 150), dtype=np.int64),
        input_size=np.array((60, 128), dtype=np.int64),
    )
    assert buf.getvalue() == data
    old = ImageEmbedding.from_bytes(buf.getvalue())
    assert old.early is None and torch.equal(old.embedding, emb.half())


def test_embeddings_must_fit_the_model(hq_predictor: SamPredictor, hq_model: Sam) -> None:
    embedding = hq_predictor.get_embedding()
    plain_emb = ImageEmbedding(embedding.embedding, embedding.original_size, embedding.input_size)
    fresh = SamPredictor(hq_model, device="cpu")
    with pytest.raises(ValueError, match="needs the early feature"):
        fresh.set_embedding(plain_emb)
    wrong = ImageEmbedding(embedding.embedding, (70, 150), (60, 128), torch.zeros(1, 16, 16, 32))
    with pytest.raises(ValueError, match="early feature is"):
        fresh.set_embedding(wrong)
    # A plain SAM of the same encoder can use an HQ embedding (the early feature unused).
    plain = build_sam("vit_tiny_test")
    load_checkpoint(
        plain, {k: v for k, v in hq_model.state_dict().items() if not k.startswith(HQ_PREFIXES)}
    )
    plain_predictor = SamPredictor(plain, device="cpu")
    plain_predictor.set_embedding(embedding)
    assert plain_predictor.predict(box=np.array([5, 5, 60, 40])).masks.shape == (3, 70, 150)
    with pytest.raises(ValueError, match="HQ-SAM"):
        plain_predictor.predict(box=np.array([5, 5, 60, 40]), hq_only=True)


def test_the_automatic_stage_runs_on_hq(hq_model: Sam) -> None:
    from model.amg import AMGConfig, AutomaticMaskGenerator

    config = AMGConfig.preset(
        "fast", points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    generator = AutomaticMaskGenerator(SamPredictor(hq_model, device="cpu"), config)
    masks = generator.generate(_image())
    assert all(m.mask.shape == (70, 150) for m in masks)

"""SAM's training recipe: losses, prompt simulation, augmentation, loop, resume, command line.

Everything runs the tiny random ``vit_tiny_test`` model (128 px input) on a synthetic COCO set
of coloured shapes on noise, in one CPU thread (far faster than two on a shared 2-core box).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from model.build import build_sam
from model.checkpoints import read_checkpoint
from model.sam import PIXEL_MEAN
from model.train import augment as aug
from model.train import losses as L
from model.train import simulate as sim
from model.train.__main__ import main as cli_main
from model.train.data import load_splits, shared_data_root
from model.train.loop import (
    LAST_CHECKPOINT,
    LOG_FILE,
    MODEL_FILE,
    LRSchedule,
    TrainConfig,
    TrainStep,
    freeze_encoder_stages,
    param_groups,
    save_training_state,
    train,
)

DATA = shared_data_root()
needs_data = pytest.mark.skipif(
    not (DATA / "coco128-seg" / "annotations.json").is_file(),
    reason=f"shared data not found at {DATA} (set MASKLOOP_SHARED_DATA to ../shared/data)",
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- synthetic data


def make_shapes_set(root: Path, *, name: str = "shapes", n_images: int = 10) -> Path:
    """A COCO set of 1-3 coloured rectangles / ellipses on noise per image (RLE masks, later
    shapes occluding earlier ones) and ``root/splits.json`` naming every 5th image as val."""
    rng = np.random.default_rng(0)
    folder = root / name
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    h, w = 96, 128
    for image_id in range(1, n_images + 1):
        image = (rng.integers(0, 128, (h, w, 3)) + 64).astype(np.uint8)
        masks: list[np.ndarray] = []
        for k in range(int(rng.integers(1, 4))):
            canvas = np.zeros((h, w), np.uint8)
            cx, cy = int(rng.integers(20, w - 20)), int(rng.integers(20, h - 20))
            a, b = int(rng.integers(8, 20)), int(rng.integers(8, 20))
            if k % 2:
                cv2.rectangle(canvas, (cx - a, cy - b), (cx + a, cy + b), 1, -1)
            else:
                cv2.ellipse(canvas, (cx, cy), (a, b), 0, 0, 360, 1, -1)
            mask = canvas.astype(bool)
            masks = [m & ~mask for m in masks] + [mask]
            image[mask] = rng.integers(0, 256, 3)
        cv2.imwrite(str(folder / "images" / f"{image_id}.png"), image[:, :, ::-1])
        images.append({"id": image_id, "file_name": f"images/{image_id}.png", "width": w,
                       "height": h})  # fmt: skip
        for mask in masks:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    "area": float(mask.sum()),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "shape"}]}  # fmt: skip
    (folder / "annotations.json").write_text(json.dumps(coco))
    splits_path = root / "splits.json"
    splits = json.loads(splits_path.read_text()) if splits_path.exists() else {}
    splits[name] = {"val": [i for i in range(1, n_images + 1) if i % 5 == 0]}
    splits_path.write_text(json.dumps(splits))
    return folder


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_shapes_set(root)
    make_shapes_set(root, name="other", n_images=5)
    return root


def tiny_config(root: Path, out: Path, **overrides: object) -> TrainConfig:
    values: dict[str, object] = dict(
        config="vit_tiny_test",
        sets=["shapes"],
        data=str(root),
        out=str(out),
        batch_images=2,
        masks_per_image=3,
        rounds=3,
        lr=1e-3,
        encoder_lr_scale=1.0,
        warmup=2,
        steps=4,
        ckpt_every=2,
        log_every=1,
        val_images=0,
        threads=1,
        progress=False,
    )
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- losses


def _disc(side: int = 32, r: int = 9) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return (((xx - side // 2) ** 2 + (yy - side // 2) ** 2) <= r * r).float()


def test_perfect_logits_give_almost_zero_loss() -> None:
    target = _disc()[None]  # 1xLxL
    logits = ((target * 2 - 1) * 30)[:, None].repeat(1, 4, 1, 1)  # 1x4xLxL, all perfect
    out = sim.RoundOutput(
        logits=logits, iou_pred=torch.ones(1, 4), kind="first", shown=torch.tensor([1])
    )
    loss, parts = L.round_loss(out, target, L.LossConfig())
    assert float(loss) < 1e-4
    assert float(parts["shown_iou"]) == pytest.approx(1.0)


def test_focal_and_dice_are_combined_20_to_1() -> None:
    torch.manual_seed(0)
    target = _disc()[None]
    logits = torch.randn(1, 3, 32, 32)
    combined, focal, dice = L.mask_loss(logits, target, L.LossConfig())
    torch.testing.assert_close(combined, 20 * focal + dice)
    # Focal by hand for one pixel: p = sigmoid(x), t = 1 -> alpha * (1 - p)^2 * -log(p).
    x = torch.tensor([[[[0.3]]]])
    p = torch.sigmoid(x)
    expected = 0.25 * (1 - p) ** 2 * -torch.log(p)
    got = L.sigmoid_focal_loss(x, torch.ones(1, 1, 1))
    torch.testing.assert_close(got, expected.reshape(1, 1))
    # Dice of a perfect soft prediction is 0, of the complement close to 1.
    assert float(L.dice_loss((target * 60 - 30)[:, None], target)) < 1e-6
    assert float(L.dice_loss((30 - target * 60)[:, None], target)) > 0.95


def test_true_iou_of_a_half_overlapping_mask() -> None:
    target = torch.zeros(1, 8, 8)
    target[:, :, :4] = 1  # left half
    logits = torch.full((1, 1, 8, 8), -5.0)
    logits[..., 2:6] = 5.0  # columns 2..5: overlap 2 columns, union 6
    assert float(L.mask_iou(logits, target)) == pytest.approx(2 / 6)


def test_min_over_three_back_propagates_only_the_best_mask() -> None:
    target = _disc()[None]
    perfect = (target * 2 - 1) * 10
    logits = torch.stack([torch.zeros(32, 32), -perfect[0], perfect[0], torch.zeros(32, 32)])
    logits = logits[None].clone().requires_grad_(True)
    iou_pred = torch.full((1, 4), 0.5, requires_grad=True)
    out = sim.RoundOutput(logits=logits, iou_pred=iou_pred, kind="first", shown=torch.tensor([1]))
    loss, _ = L.round_loss(out, target, L.LossConfig(single_first=0.0))
    loss.backward()
    grad = logits.grad.abs().flatten(2).sum(dim=2)[0]  # type: ignore[union-attr]
    assert grad[2] > 0  # the best multimask output learns
    assert grad[1] == 0 and grad[3] == 0  # the worse two do not
    assert grad[0] == 0  # single mask untrained in the paper's recipe
    # The IoU head learns for all three multimask outputs.
    assert (iou_pred.grad[0, 1:] != 0).all() and iou_pred.grad[0, 0] == 0  # type: ignore[index]


def test_iou_weight_scales_only_the_iou_head_term() -> None:
    """--iou-weight: the IoU head's squared error counts N times, the masks' loss is unchanged."""
    torch.manual_seed(1)
    target = _disc()[None]
    logits = torch.randn(1, 4, 32, 32)
    iou_pred = torch.full((1, 4), 0.9)
    out = sim.RoundOutput(logits=logits, iou_pred=iou_pred, kind="first", shown=torch.tensor([1]))
    plain, parts = L.round_loss(out, target, L.LossConfig())
    heavy, _ = L.round_loss(out, target, L.LossConfig(iou=5.0))
    iou_term = float(parts["iou_mse"])
    assert iou_term > 0.1  # random logits are far from the 0.9 predicted
    assert float(heavy) - float(plain) == pytest.approx(4 * iou_term, rel=1e-5)


def test_single_mask_is_trained_on_the_first_round_too() -> None:
    target = _disc()[None]
    logits = torch.zeros(1, 4, 32, 32, requires_grad=True)
    out = sim.RoundOutput(
        logits=logits, iou_pred=torch.zeros(1, 4), kind="first", shown=torch.tensor([1])
    )
    L.round_loss(out, target, L.LossConfig())[0].backward()
    assert logits.grad[0, 0].abs().sum() > 0  # type: ignore[index]


def test_later_rounds_train_the_single_mask() -> None:
    target = _disc()[None]
    logits = torch.zeros(1, 4, 32, 32, requires_grad=True)
    out = sim.RoundOutput(
        logits=logits, iou_pred=torch.zeros(1, 4), kind="point", shown=torch.tensor([0])
    )
    L.round_loss(out, target, L.LossConfig(multimask_later=0.0))[0].backward()
    grad = logits.grad.abs().flatten(2).sum(dim=2)[0]  # type: ignore[union-attr]
    assert grad[0] > 0 and (grad[1:] == 0).all()


def test_full_resolution_targets_upsample_the_logits() -> None:
    target = torch.zeros(1, 128, 128)
    target[:, 32:96, 32:96] = 1
    logits = torch.full((1, 1, 32, 32), -9.0)
    logits[..., 8:24, 8:24] = 9.0
    assert float(L.mask_iou(logits, target)) > 0.95


# --------------------------------------------------------------------------- simulation


def _square(side: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    m = torch.zeros(side, side, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.mark.parametrize("protocol_prob", [0.0, 1.0])
def test_positive_click_lands_in_the_false_negative(protocol_prob: float) -> None:
    gt = _square(64, 10, 50, 10, 50)
    pred = gt & ~_square(64, 20, 40, 10, 50)  # a band of the object missed
    cfg = sim.SimulationConfig(protocol_prob=protocol_prob)
    for seed in range(5):
        xy, labels = sim.corrective_clicks(
            gt[None], pred[None], torch.ones(1, 64, 64, dtype=torch.bool), cfg,
            torch.Generator().manual_seed(seed), np.random.default_rng(seed),
        )  # fmt: skip
        x, y = int(xy[0, 0]), int(xy[0, 1])
        assert int(labels[0]) == 1 and bool(gt[y, x]) and not bool(pred[y, x])


def test_negative_click_goes_inside_the_largest_false_positive_blob() -> None:
    gt = _square(96, 10, 40, 10, 40)
    big = _square(96, 50, 80, 50, 80)  # 30x30, centre (64.5, 64.5)
    small = _square(96, 5, 11, 70, 76)
    pred = gt | big | small
    cfg = sim.SimulationConfig(protocol_prob=1.0)
    xy, labels = sim.corrective_clicks(
        gt[None], pred[None], torch.ones(1, 96, 96, dtype=torch.bool), cfg,
        torch.Generator().manual_seed(0), np.random.default_rng(0),
    )  # fmt: skip
    x, y = int(xy[0, 0]), int(xy[0, 1])
    assert int(labels[0]) == 0
    assert 62 <= x <= 67 and 62 <= y <= 67  # the interior of the big blob, not an edge


def test_uniform_negative_clicks_are_false_positives_and_reuse_no_pixel() -> None:
    gt = _square(48, 5, 20, 5, 20)
    pred = gt | _square(48, 30, 34, 30, 34)
    not_clicked = torch.ones(1, 48, 48, dtype=torch.bool)
    not_clicked[0, 30:34, 30:33] = False  # only column 33 of the blob is still free
    cfg = sim.SimulationConfig(protocol_prob=0.0)
    for seed in range(5):
        xy, labels = sim.corrective_clicks(
            gt[None], pred[None], not_clicked, cfg,
            torch.Generator().manual_seed(seed), np.random.default_rng(seed),
        )  # fmt: skip
        assert int(labels[0]) == 0 and int(xy[0, 0]) == 33 and 30 <= int(xy[0, 1]) < 34


def test_no_error_left_gives_no_click() -> None:
    gt = _square(32, 5, 20, 5, 20)[None]
    for p in (0.0, 1.0):
        _, labels = sim.corrective_clicks(
            gt, gt.clone(), torch.ones_like(gt), sim.SimulationConfig(protocol_prob=p),
            torch.Generator(), np.random.default_rng(0),
        )  # fmt: skip
        assert int(labels[0]) == -1


def test_round_schedule_follows_the_paper() -> None:
    kinds = sim.round_schedule(11, 2, np.random.default_rng(0))
    assert kinds[0] == "first" and kinds[-1] == "mask"
    assert kinds.count("point") == 8 and kinds.count("mask") == 2
    assert kinds[1] == "point"  # a mask-only round never comes right after the first prompt
    assert sim.round_schedule(1, 2, np.random.default_rng(0)) == ["first"]
    assert sim.round_schedule(3, 2, np.random.default_rng(0)) == ["first", "point", "mask"]


def test_first_points_are_inside_and_boxes_are_close() -> None:
    masks = torch.stack([_square(128, 20, 60, 30, 90), _square(128, 70, 120, 5, 40)])
    masks = masks.repeat(20, 1, 1)
    g = torch.Generator().manual_seed(0)
    xy, ok = sim.uniform_pixels(masks, g)
    assert ok.all() and masks[torch.arange(40), xy[:, 1], xy[:, 0]].all()
    boxes = sim.noisy_boxes(masks, sim.SimulationConfig(), g)
    exact = sim.mask_boxes(masks)
    torch.testing.assert_close(exact[0], torch.tensor([30.0, 20.0, 89.0, 59.0]))
    cap = 20 * 128 / 1024
    assert (boxes - exact).abs().max() <= cap + 1e-5
    assert (boxes - exact).abs().max() > 0  # noise was added
    assert (boxes[:, :2] <= boxes[:, 2:]).all()


def test_batched_decoding_matches_the_public_decoder() -> None:
    torch.manual_seed(0)
    sam = build_sam("vit_tiny_test")
    emb = torch.randn(3, 32, 8, 8)
    prompts = sim.Prompts(
        first_point=torch.tensor([[40.0, 50.0], [0.0, 0.0], [90.0, 20.0]]),
        boxes=torch.tensor([[0.0, 0, 0, 0], [10, 20, 70, 90], [0, 0, 0, 0]]),
        is_box=torch.tensor([False, True, False]),
        coords=torch.tensor([[[60.0, 60.0]], [[30.0, 40.0]], [[5.0, 5.0]]]),
        labels=torch.tensor([[0], [1], [-1]], dtype=torch.int),
    )
    mask_input = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        logits, iou = sim.decode_all_tokens(sam, emb, prompts, mask_input)
        for i in range(3):
            if prompts.is_box[i]:
                points = (prompts.coords[i : i + 1], prompts.labels[i : i + 1])
                box = prompts.boxes[i : i + 1]
            else:
                coords = torch.cat(
                    [prompts.first_point[i : i + 1, None], prompts.coords[i : i + 1]], 1
                )
                labels = torch.cat(
                    [torch.ones(1, 1, dtype=torch.int), prompts.labels[i : i + 1]], 1
                )
                points, box = (coords, labels), None
            for multi, tokens in ((False, slice(0, 1)), (True, slice(1, 4))):
                ref_logits, ref_iou = sam.decode(
                    emb[i : i + 1], points=points, boxes=box, masks=mask_input[i : i + 1],
                    multimask_output=multi,
                )  # fmt: skip
                torch.testing.assert_close(logits[i : i + 1, tokens], ref_logits)
                torch.testing.assert_close(iou[i : i + 1, tokens], ref_iou)


def test_simulation_runs_all_rounds_and_reaches_the_encoder() -> None:
    torch.manual_seed(0)
    sam = build_sam("vit_tiny_test").train()
    images = torch.rand(2, 3, 128, 128) * 255
    emb = sam.encode_image(images)
    gt = torch.stack([_square(128, 10, 60, 10, 60), _square(128, 70, 120, 60, 120),
                      _square(128, 30, 90, 30, 50)])  # fmt: skip
    cfg = sim.SimulationConfig(rounds=5, box_prob=0.5)
    outputs = sim.simulate(
        sam, emb, torch.tensor([0, 0, 1]), gt, cfg,
        generator=torch.Generator().manual_seed(0), rng=np.random.default_rng(0),
    )  # fmt: skip
    assert [o.kind for o in outputs][0] == "first" and len(outputs) == 5
    assert all(o.logits.shape == (3, 4, 32, 32) and o.iou_pred.shape == (3, 4) for o in outputs)
    assert all(int(o.shown.max()) == 0 for o in outputs[1:])
    terms = L.interactive_loss(outputs, torch.rand(3, 32, 32), L.LossConfig())
    terms.total.backward()
    assert sam.image_encoder.patch_embed.proj.weight.grad is not None


def test_untrained_rounds_run_without_a_graph() -> None:
    assert sim.trained_rounds(11, 0, np.random.default_rng(0)) == set(range(11))
    chosen = sim.trained_rounds(11, 4, np.random.default_rng(0))
    assert len(chosen) == 4 and {0, 10} <= chosen
    sam = build_sam("vit_tiny_test").train()
    emb = sam.encode_image(torch.rand(1, 3, 128, 128) * 255)
    gt = _square(128, 10, 60, 10, 60)[None]
    outputs = sim.simulate(
        sam, emb, torch.tensor([0]), gt, sim.SimulationConfig(rounds=5, loss_rounds=2),
        generator=torch.Generator().manual_seed(0), rng=np.random.default_rng(0),
    )  # fmt: skip
    assert [o.trained for o in outputs] == [True, False, False, False, True]
    assert [o.logits.requires_grad for o in outputs] == [True, False, False, False, True]
    L.interactive_loss(outputs, gt[:, ::4, ::4].float(), L.LossConfig()).total.backward()


# --------------------------------------------------------------------------- augmentation


def _red_square_image(h: int = 90, w: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 100, (h, w, 3)).astype(np.uint8)
    image[..., 0] //= 2  # keep the noise far from pure red
    mask = np.zeros((h, w), bool)
    mask[20:50, 70:110] = True
    image[mask] = (255, 0, 0)
    return image, mask


def test_flip_and_jitter_keep_masks_on_the_object() -> None:
    image, mask = _red_square_image()
    out_image, out_masks = aug.large_scale_jitter(
        image, mask[None], image_size=120, scale=1.0, flip=True, rng=np.random.default_rng(0)
    )
    # Exactly mirrored: columns 70..109 become 10..49.
    assert out_masks[0, 20:50, 10:50].all() and out_masks[0].sum() == mask.sum()
    assert (out_image[out_masks[0]] == (255, 0, 0)).all()

    cfg = aug.AugmentConfig(image_size=128, low_res_size=32, colour_prob=0.0, min_area=1)
    for seed in range(8):
        out_image, out_masks, keep = aug.augment(
            image, mask[None], cfg, np.random.default_rng(seed)
        )
        if not len(keep):
            continue  # the crop missed the square
        red = (out_image[..., 0] > 200) & (out_image[..., 1] < 60) & (out_image[..., 2] < 60)
        inter, union = (red & out_masks[0]).sum(), (red | out_masks[0]).sum()
        assert inter / union > 0.85, seed


def test_colour_jitter_changes_colours_not_geometry() -> None:
    image, _ = _red_square_image()
    out = aug.colour_jitter(
        image, brightness=0.3, contrast=0.3, saturation=0.3, rng=np.random.default_rng(0)
    )
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)


def test_samples_are_padded_like_the_predictor_input(shapes_root: Path) -> None:
    images = aug.collect_train_images(shapes_root, ["shapes"])
    cfg = aug.AugmentConfig(image_size=128, low_res_size=32, max_instances=2)
    sample = aug.make_sample(images[0], cfg, np.random.default_rng(3))
    h, w = sample.input_size
    assert sample.image.shape == (3, 128, 128) and sample.masks.shape[1:] == (128, 128)
    assert 1 <= sample.masks.shape[0] <= 2
    assert not sample.masks[:, h:, :].any() and not sample.masks[:, :, w:].any()
    pooled = torch.nn.functional.avg_pool2d(sample.masks.float()[:, None], 4)[:, 0]
    torch.testing.assert_close(sample.low_res_masks, pooled)
    assert (sample.masks.flatten(1).sum(1) >= cfg.min_area).all()
    # The padding normalises to exactly 0, as Sam.preprocess pads.
    sam = build_sam("vit_tiny_test")
    normalised = sam.preprocess(sample.image)
    if h < 128:
        assert normalised[:, h:, :].abs().max() == 0
        torch.testing.assert_close(sample.image[:, -1, -1], torch.tensor(PIXEL_MEAN))


def test_an_image_whose_objects_are_all_under_min_area_still_gives_its_largest(
    shapes_root: Path,
) -> None:
    images = aug.collect_train_images(shapes_root, ["shapes"])
    cfg = aug.AugmentConfig(image_size=128, low_res_size=32, max_instances=2, min_area=10**6)
    sample = aug.make_sample(images[0], cfg, np.random.default_rng(3))
    assert sample.masks.shape[0] == 1 and sample.masks.any()
    areas = [
        a.decode(images[0].image.height, images[0].image.width).sum() for a in images[0].annotations
    ]
    assert sample.annotation_ids == [images[0].annotations[int(np.argmax(areas))].id]


def test_training_images_exclude_validation_and_held_out_sets(shapes_root: Path) -> None:
    images = aug.collect_train_images(shapes_root, ["shapes", "other"], holdout=["other"])
    assert {i.set_name for i in images} == {"shapes"}
    val = load_splits(shapes_root)["shapes"]
    assert val and not val & {i.image.id for i in images}
    ds = aug.TrainDataset(images, aug.AugmentConfig(image_size=128, low_res_size=32), seed=0)
    # One epoch shows every image once; samples are a function of (seed, index).
    assert sorted(ds.image_for(g).image.id for g in range(len(ds))) == sorted(
        i.image.id for i in images
    )
    torch.testing.assert_close(ds[3].image, ds[3].image)


@needs_data
def test_real_training_split_has_no_validation_image() -> None:
    images = aug.collect_train_images(DATA, ["coco128-seg"])
    val = load_splits(DATA)["coco128-seg"]
    assert images and not val & {i.image.id for i in images}


@needs_data
@pytest.mark.parametrize("weighting", ["images", "sqrt", "equal"])
def test_set_weighting_shares_samples_between_sets(weighting: str) -> None:
    """A big set (ccp1003) dominates by images; sqrt and equal weighting give the small sets
    their share, reproducibly."""
    images = aug.collect_train_images(DATA, ["ccp1003", "pennfudan170", "fruits-nuts"])
    sizes = Counter(i.set_name for i in images)
    cfg = aug.AugmentConfig(image_size=128, low_res_size=32)
    ds = aug.TrainDataset(images, cfg, seed=0, set_weighting=weighting)
    n = 6000
    drawn = [ds.image_for(g).set_name for g in range(n)]
    share = {s: drawn.count(s) / n for s in ("ccp1003", "pennfudan170", "fruits-nuts")}
    expected = {
        "images": sizes["ccp1003"] / len(images),
        "sqrt": sizes["ccp1003"] ** 0.5 / sum(n**0.5 for n in sizes.values()),
        "equal": 1 / 3,
    }[weighting]
    assert share["ccp1003"] == pytest.approx(expected, abs=0.02)
    # fruits-nuts: 15 images of 954, 1.6% by images, 9% by square root, a third when equal.
    assert share["fruits-nuts"] > {"images": 0.01, "sqrt": 0.07, "equal": 0.3}[weighting]
    again = aug.TrainDataset(images, cfg, seed=0, set_weighting=weighting)
    assert [again.image_for(g).image.id for g in range(50)] == [
        ds.image_for(g).image.id for g in range(50)
    ]
    with pytest.raises(ValueError, match="unknown set weighting"):
        aug.TrainDataset(images, cfg, seed=0, set_weighting="bigger")


# --------------------------------------------------------------------------- the loop


def test_schedule_warms_up_then_decays() -> None:
    s = LRSchedule(warmup=10, total_steps=100, kind="cosine", min_ratio=0.01)
    assert s(0) == pytest.approx(0.1 * (0.01 + 0.99 * 0.5 * (1 + np.cos(0))))
    assert s(9) == pytest.approx(0.5 * 0.99 * (1 + np.cos(np.pi * 0.09)) + 0.01)
    assert s(100) == pytest.approx(0.01)
    assert LRSchedule(warmup=0, total_steps=None)(1000) == 1.0
    step = LRSchedule(warmup=0, total_steps=90, kind="step")
    assert (step(10), step(70), step(89)) == (1.0, 0.1, pytest.approx(0.01))


def test_param_groups_and_freezing() -> None:
    sam = build_sam("vit_tiny_test")
    frozen = freeze_encoder_stages(sam, 1)
    assert "image_encoder.blocks.0.attn.qkv.weight" in frozen
    assert "image_encoder.blocks.1.attn.qkv.weight" not in frozen
    groups = param_groups(
        sam, lr=1.0, encoder_lr_scale=0.1, weight_decay=0.1,
        new_encoder_prefixes=["image_encoder.neck."],
    )  # fmt: skip
    by_name = {g["name"]: g for g in groups}
    assert by_name["encoder/decay"]["lr"] == 0.1 and by_name["decoder/decay"]["lr"] == 1.0
    names = {id(p): n for n, p in sam.named_parameters()}
    enc = {names[id(p)] for g in groups if g["name"].startswith("encoder") for p in g["params"]}
    assert "image_encoder.blocks.1.attn.qkv.weight" in enc
    assert not any(n.startswith(("image_encoder.neck.", "image_encoder.blocks.0.")) for n in enc)
    assert all(g["weight_decay"] == 0 for g in groups if g["name"].endswith("no_decay"))
    assert len(freeze_encoder_stages(sam, -1)) == len(list(sam.image_encoder.parameters()))


def test_efficientnet_stages_freeze_and_its_neck_learns_at_full_rate() -> None:
    from model.build import SamConfig, assemble_sam
    from model.encoders.efficientnet import EfficientNetLiteEncoder

    sam = assemble_sam(
        image_encoder=EfficientNetLiteEncoder("lite0", img_size=128),
        config=SamConfig(image_size=128, decoder_mlp_dim=64),
    )
    frozen = set(freeze_encoder_stages(sam, 3))  # stem + stages of stride 2, 4 (x2) ... 8
    assert "image_encoder.backbone._conv_stem.weight" in frozen
    blocks = sam.image_encoder.backbone._blocks
    stage_starts = [i for i, b in enumerate(blocks) if not b.use_residual]
    last_frozen = stage_starts[3] - 1
    assert f"image_encoder.backbone._blocks.{last_frozen}._project_conv.weight" in frozen
    assert f"image_encoder.backbone._blocks.{last_frozen + 1}._project_conv.weight" not in frozen
    assert not any(".neck." in n for n in frozen)
    groups = param_groups(
        sam, lr=1.0, encoder_lr_scale=0.1, weight_decay=0.1,
        new_encoder_prefixes=["image_encoder.neck."],
    )  # fmt: skip
    neck = sam.image_encoder.neck.conv1.weight
    assert any(g["lr"] == 1.0 and any(p is neck for p in g["params"]) for g in groups)


def test_a_few_steps_on_shapes_decrease_the_loss(shapes_root: Path) -> None:
    torch.manual_seed(0)
    sam = build_sam("vit_tiny_test").train()
    images = aug.collect_train_images(shapes_root, ["shapes"])
    ds = aug.TrainDataset(
        images, aug.AugmentConfig(image_size=128, low_res_size=32, max_instances=3), seed=0
    )
    batch = aug.collate([ds[0], ds[1]])
    step = TrainStep(
        sam, sim.SimulationConfig(rounds=3), L.LossConfig(), encoder_frozen=False, bf16=False
    )
    groups = param_groups(
        sam, lr=2e-3, encoder_lr_scale=1.0, weight_decay=0.0, new_encoder_prefixes=[]
    )
    optimizer = torch.optim.AdamW(groups)
    losses = []
    for _ in range(30):
        loss, _ = step(batch.images, batch.image_index, batch.masks, batch.low_res_masks, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def test_a_killed_run_resumes_to_the_same_state(shapes_root: Path, tmp_path: Path) -> None:
    straight = train(tiny_config(shapes_root, tmp_path / "a"), echo=lambda _m: None)
    assert straight["steps"] == 4
    first = train(tiny_config(shapes_root, tmp_path / "b", stop_after=2), echo=lambda _m: None)
    assert first["steps"] == 2 and first["stopped_by"] == "stop_after"
    resumed = train(
        tiny_config(shapes_root, tmp_path / "b", resume=str(tmp_path / "b" / LAST_CHECKPOINT)),
        echo=lambda _m: None,
    )
    assert resumed["steps"] == 4 and resumed["steps_this_run"] == 2
    a = read_checkpoint(tmp_path / "a" / LAST_CHECKPOINT)
    b = read_checkpoint(tmp_path / "b" / LAST_CHECKPOINT)
    assert a["step"] == b["step"] == 4
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    for key, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][key][name]), (key, name)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 4
    assert a["recipe"] == b["recipe"]


def test_a_time_budget_stops_cleanly_and_sizes_the_schedule(
    shapes_root: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(shapes_root, tmp_path, steps=None, minutes=0.05, ckpt_every=0)
    summary = train(cfg, echo=lambda _m: None)
    assert summary["stopped_by"] == "minutes" and summary["steps"] >= 1
    assert summary["train_minutes"] < 0.1
    state = read_checkpoint(tmp_path / LAST_CHECKPOINT)
    assert state["step"] == summary["steps"]
    if summary["steps"] >= 10:  # fast enough to have measured its speed
        assert state["scheduler"]["lr_lambdas"][0]["total_steps"] >= 10


def test_checkpoints_are_written_atomically(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sam = build_sam("vit_tiny_test")
    optimizer = torch.optim.AdamW(sam.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule(warmup=1, total_steps=5))
    cfg = tiny_config(shapes_root, tmp_path)
    path = tmp_path / LAST_CHECKPOINT
    kwargs = dict(optimizer=optimizer, scheduler=scheduler, stats={})
    save_training_state(path, sam, cfg, step=1, **kwargs)  # type: ignore[arg-type]
    before = path.read_bytes()

    def crash(obj: object, f: object) -> None:
        f.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_training_state(path, sam, cfg, step=2, **kwargs)  # type: ignore[arg-type]
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [LAST_CHECKPOINT]  # no temp file left
    assert read_checkpoint(path)["step"] == 1


def test_command_line_on_synthetic_data(shapes_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = cli_main(
        ["--config", "vit_tiny_test", "--sets", "shapes,other", "--holdout", "other",
         "--data", str(shapes_root), "--out", str(out), "--steps", "2", "--rounds", "2",
         "--masks-per-image", "2", "--threads", "1", "--val-images", "1",
         "--val-instances", "2", "--val-clicks", "2", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    events = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "end"
    end = events[-1]
    assert end["steps"] == 2 and end["validation"][-1]["best"]["instances"] == 2
    # Validation covers the held-out set too (its validation images only), set by set.
    assert set(end["validation"][-1]["single"]["per_set"]) == {"shapes", "other"}
    assert read_checkpoint(out / MODEL_FILE)["config"]["name"] == "vit_tiny_test"
    build_sam("vit_tiny_test", out / MODEL_FILE)  # the fp16 weights load strictly

    # Warm start from those weights: a new run whose first loss is the trained model's.
    warm = train(
        tiny_config(shapes_root, tmp_path / "warm", init=str(out / MODEL_FILE), steps=1, lr=0.0),
        echo=lambda _m: None,
    )
    cold = train(tiny_config(shapes_root, tmp_path / "cold", steps=1, lr=0.0), echo=lambda _m: None)
    assert warm["loss_start"] != cold["loss_start"]
    after = read_checkpoint(tmp_path / "warm" / LAST_CHECKPOINT)["model"]
    for key, tensor in read_checkpoint(out / MODEL_FILE)["model"].items():
        torch.testing.assert_close(after[key].half(), tensor.half())  # lr 0: unchanged


@needs_data
def test_command_line_on_the_shared_data(tmp_path: Path) -> None:
    out = tmp_path / "real"
    code = cli_main(
        ["--config", "vit_tiny_test", "--sets", "coco128-seg", "--out", str(out),
         "--steps", "2", "--rounds", "2", "--masks-per-image", "3", "--threads", "1",
         "--val-images", "1", "--val-instances", "1", "--val-clicks", "2",
         "--val-modes", "best", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert read_checkpoint(out / LAST_CHECKPOINT)["step"] == 2

"""The interactive prompt simulation of SAM's training (SA paper, appendix A), batched.

Per instance, round 0 gives the first prompt: a foreground point drawn uniformly inside the
mask or, with probability ``box_prob``, the mask's box with each coordinate jittered by noise
of standard deviation 10% of the box side (at most 20 px at a 1024 px input, scaled to ours).
Each later round adds one corrective point drawn from the error between the previous
prediction and the ground truth: positive in a false negative, negative in a false positive.
The previous low-res logits are always fed back as the mask prompt. Two rounds add no point
(one at a random place among the corrective rounds, one at the end), so the model learns to
refine from the mask alone. With the default 11 rounds: 1 first prompt, 8 points, 2 without.

Corrective points (issue 13's lesson): the paper samples them uniformly in the error region,
but annotators, and the evaluation protocol, click at the interior of the largest error
region: the point farthest from its boundary. Negative clicks placed uniformly land on thin
slivers along the object's edge, which teaches the model that a negative click there means
"shave the boundary", and real negatives (in the middle of a wrong blob) then behave badly. So
each corrective click is, with probability ``protocol_prob``, exactly the protocol's click
(``model.evaluate.next_click``: farthest-from-boundary point of the error region with the larger
distance, positive or negative accordingly, never a pixel clicked before), else a uniform
sample of the error region. Protocol clicks come in the proportion of positives and negatives
the protocol itself produces.

Everything is batched over the M instances of a batch (of one or more images): one decoder run
per round for all prompts (two when boxes and points are mixed: SAM's prompt encoder adds a
"not a point" padding token only to prompts without a box, and padding box-less prompts with
an extra token instead would differ from what the predictor gives at inference). The decoder
computes all four mask tokens in one pass, so the single-mask output and the three multimask
outputs come from the same run.

Several processes (DistributedDataParallel): each rank simulates only its own images'
instances, but every random draw is made for the whole step's instances from a generator
seeded identically on every rank, and each rank keeps its rows (``Share``). An instance thus
gets exactly the prompts it would get if one process ran the whole global batch: the ranks'
gradients, averaged, are the single process's (the 2-process test checks it).

HQ-SAM: the same run also gives the HQ mask (``RoundOutput.hq_logits``); HQ-SAM's
prompt-independent features are computed once per image for all rounds. What the simulated
annotator sees, and what is fed back, is the model's final answer as the predictor gives it:
SAM's shown mask plus the HQ mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from model.evaluate import next_click
from model.sam import Sam

RoundKind = Literal["first", "point", "mask"]

#: The paper's box-noise cap is 20 px at SAM's 1024 px input; we scale it to the input size.
_PAPER_INPUT = 1024


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """How prompts are simulated.

    rounds: decoder runs per instance and step, the first prompt included (paper: 11).
    no_point_rounds: rounds that only feed the previous mask back (paper: 2; one at the end,
        the other at a random corrective position). Fewer when ``rounds`` is small.
    box_prob: probability that the first prompt is a noisy box instead of a point.
    box_noise: standard deviation of each box coordinate's noise, as a fraction of the box side.
    box_noise_max: cap of that noise in pixels at a 1024 px input (scaled to the input size).
    protocol_prob: probability that a corrective click is the evaluation protocol's click
        (interior of the largest error region) rather than a uniform error sample.
    loss_rounds: how many rounds are back-propagated (0 = all, the paper). The first and the
        last always are, the others are drawn at random; the rest run without a graph. A
        CPU lever: every round still shapes the prompts and fed-back masks the trained rounds
        see, at a forward's cost instead of a forward's and a backward's (about 3x).
    """

    rounds: int = 11
    no_point_rounds: int = 2
    box_prob: float = 0.5
    box_noise: float = 0.1
    box_noise_max: float = 20.0
    protocol_prob: float = 0.5
    loss_rounds: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")


@dataclass(frozen=True)
class Share:
    """This process's instances within the step's global batch split over ranks: rows
    ``offset`` .. ``offset + M`` of ``total`` (rank order, instances in image order)."""

    offset: int
    total: int

    def rows(self, m: int) -> slice:
        if self.offset < 0 or self.offset + m > self.total:
            raise ValueError(f"rows {self.offset}..{self.offset + m} outside 0..{self.total}")
        return slice(self.offset, self.offset + m)


def _rand(m: int, generator: torch.Generator, share: Share | None) -> torch.Tensor:
    """M uniforms: this share's rows of the draw for all the step's instances."""
    if share is None:
        return torch.rand(m, generator=generator)
    return torch.rand(share.total, generator=generator)[share.rows(m)]


def _randn(m: int, k: int, generator: torch.Generator, share: Share | None) -> torch.Tensor:
    if share is None:
        return torch.randn((m, k), generator=generator)
    return torch.randn((share.total, k), generator=generator)[share.rows(m)]


def _np_random(m: int, rng: np.random.Generator, share: Share | None) -> np.ndarray:
    if share is None:
        return rng.random(m)
    return rng.random(share.total)[share.rows(m)]


@dataclass
class RoundOutput:
    """One decoder run for all M instances.

    logits: Mx4xLxL low-res mask logits; token 0 is the single-mask output, 1..3 the
        multimask outputs (L = 4x the embedding side).
    iou_pred: Mx4 predicted IoU of each token's mask.
    hq_logits: HQ-SAM's HQ mask, Mx1xLxL; None for a plain SAM.
    kind: "first" (first prompt: ambiguous, multimask trained), "point" (a corrective point
        was added), "mask" (no new point: only the previous mask fed back).
    shown: M long, the token whose mask the simulated annotator saw and that was fed back.
    trained: whether the round is back-propagated (False: computed without a graph).
    """

    logits: torch.Tensor
    iou_pred: torch.Tensor
    kind: RoundKind
    shown: torch.Tensor
    trained: bool = True
    hq_logits: torch.Tensor | None = None

    def shown_logits(self) -> torch.Tensor:
        """Mx1xLxL logits of the mask the annotator saw: the shown token's, plus the HQ mask
        for HQ-SAM (its final mask, as the predictor answers)."""
        rows = torch.arange(self.logits.shape[0], device=self.logits.device)
        chosen = self.logits[rows, self.shown][:, None]
        return chosen if self.hq_logits is None else chosen + self.hq_logits


@dataclass
class Prompts:
    """The prompts of M instances so far, in the model's input frame (pixels, x then y).

    first_point: Mx2, the first click of point-prompted instances (unused where ``is_box``).
    boxes: Mx4 (x0, y0, x1, y1), the noisy box of box-prompted instances (zeros elsewhere).
    is_box: M bool.
    coords: MxNx2 corrective clicks; labels: MxN (1 positive, 0 negative, -1 none: the
        prediction had no error left to click on).
    """

    first_point: torch.Tensor
    boxes: torch.Tensor
    is_box: torch.Tensor
    coords: torch.Tensor
    labels: torch.Tensor

    def add(self, coords: torch.Tensor, labels: torch.Tensor) -> Prompts:
        """A copy with one more click per instance (coords Mx2, labels M)."""
        return Prompts(
            first_point=self.first_point,
            boxes=self.boxes,
            is_box=self.is_box,
            coords=torch.cat([self.coords, coords[:, None].to(self.coords)], dim=1),
            labels=torch.cat([self.labels, labels[:, None].to(self.labels)], dim=1),
        )


def trained_rounds(rounds: int, loss_rounds: int, rng: np.random.Generator) -> set[int]:
    """Indices of the rounds to back-propagate: all when ``loss_rounds`` is 0 or >= rounds,
    else the first, the last and ``loss_rounds - 2`` others drawn uniformly."""
    if loss_rounds <= 0 or loss_rounds >= rounds:
        return set(range(rounds))
    chosen = {0, rounds - 1}
    middle = np.arange(1, rounds - 1)
    extra = max(0, loss_rounds - len(chosen))
    chosen.update(int(i) for i in rng.choice(middle, size=min(extra, len(middle)), replace=False))
    return chosen


def round_schedule(rounds: int, no_point_rounds: int, rng: np.random.Generator) -> list[RoundKind]:
    """The kind of each round: "first", then "point"s with up to two "mask" rounds.

    The paper's two mask-only rounds: the last one, and one at a random corrective position
    (never right after the first prompt, so a point always precedes it). Dropped, middle one
    first, when there are too few rounds to keep at least one corrective point.
    """
    kinds: list[RoundKind] = ["first"]
    kinds += ["point" for _ in range(rounds - 1)]
    corrective = rounds - 1
    n_mask = min(no_point_rounds, 2, max(0, corrective - 1))
    if n_mask >= 1:
        kinds[-1] = "mask"
    if n_mask >= 2 and corrective >= 4:
        kinds[int(rng.integers(2, rounds - 1))] = "mask"
    return kinds


# --------------------------------------------------------------------------- sampling


def uniform_pixels(
    regions: torch.Tensor, generator: torch.Generator, share: Share | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pixel drawn uniformly inside each of M regions, on their device.

    regions: MxHxW bool. Returns (Mx2 long (x, y), M bool: the region was non-empty; the
    pixel of an empty region is meaningless). Only M uniforms come from ``generator`` (a CPU
    generator), so the same draw happens on CPU and CUDA; with a ``share``, the share's rows
    of ``share.total`` uniforms.
    """
    m, h, w = regions.shape
    flat = regions.reshape(m, h * w).to(torch.int32)
    cumulative = flat.cumsum(dim=1, dtype=torch.int32)
    counts = cumulative[:, -1]
    u = _rand(m, generator, share).to(regions.device)
    # The k-th pixel of the region (1-based), k uniform in 1..count.
    k = (u * counts).floor().to(torch.int32).clamp(max=counts - 1).clamp(min=0) + 1
    index = torch.searchsorted(cumulative, k[:, None].contiguous()).squeeze(1).clamp(max=h * w - 1)
    xy = torch.stack([index % w, index // w], dim=1)
    return xy, counts > 0


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """MxHxW bool -> Mx4 float (x0, y0, x1, y1), inclusive pixel bounds (zeros if empty)."""
    m, h, w = masks.shape
    cols = masks.any(dim=1)  # MxW
    rows = masks.any(dim=2)  # MxH
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    x0 = torch.where(cols, xs, w).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1)
    y0 = torch.where(rows, ys, h).amin(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(masks.reshape(m, -1).any(dim=1)[:, None], boxes, 0.0)


def noisy_boxes(
    masks: torch.Tensor,
    cfg: SimulationConfig,
    generator: torch.Generator,
    share: Share | None = None,
) -> torch.Tensor:
    """The masks' boxes, each coordinate moved by N(0, (box_noise x side)^2) capped at the
    scaled ``box_noise_max``, clipped to the image. MxHxW bool -> Mx4 float."""
    boxes = mask_boxes(masks)
    side = masks.shape[-1]
    widths = (boxes[:, 2] - boxes[:, 0] + 1).clamp(min=1)
    heights = (boxes[:, 3] - boxes[:, 1] + 1).clamp(min=1)
    scale = torch.stack([widths, heights, widths, heights], dim=1) * cfg.box_noise
    cap = cfg.box_noise_max * side / _PAPER_INPUT
    noise = _randn(boxes.shape[0], boxes.shape[1], generator, share).to(boxes.device)
    noisy = boxes + (noise * scale).clamp(-cap, cap)
    noisy = noisy.clamp(0, side - 1)
    # A swapped pair after noise becomes a valid box again.
    x0, x1 = torch.minimum(noisy[:, 0], noisy[:, 2]), torch.maximum(noisy[:, 0], noisy[:, 2])
    y0, y1 = torch.minimum(noisy[:, 1], noisy[:, 3]), torch.maximum(noisy[:, 1], noisy[:, 3])
    return torch.stack([x0, y0, x1, y1], dim=1)


def first_prompts(
    gt: torch.Tensor,
    cfg: SimulationConfig,
    generator: torch.Generator,
    share: Share | None = None,
) -> Prompts:
    """Round 0: a uniform foreground point, or a noisy box with probability ``box_prob``.

    gt: MxSxS bool, non-empty masks.
    """
    m = gt.shape[0]
    device = gt.device
    is_box = (_rand(m, generator, share) < cfg.box_prob).to(device)
    points, _ = uniform_pixels(gt, generator, share)
    boxes = noisy_boxes(gt, cfg, generator, share)
    return Prompts(
        first_point=points.float(),
        boxes=torch.where(is_box[:, None], boxes, 0.0),
        is_box=is_box,
        coords=torch.zeros((m, 0, 2), device=device),
        labels=torch.zeros((m, 0), dtype=torch.int, device=device),
    )


def corrective_clicks(
    gt: torch.Tensor,
    pred: torch.Tensor,
    not_clicked: torch.Tensor,
    cfg: SimulationConfig,
    generator: torch.Generator,
    rng: np.random.Generator,
    share: Share | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective click per instance from the error of ``pred`` against ``gt``.

    Arguments:
        gt, pred: MxSxS bool ground truth and the prediction the annotator saw.
        not_clicked: MxSxS bool, False where a click was already placed (never reused).
        generator: draws the uniform error samples; rng: protocol-or-uniform choices.
        share: this process's rows of the step's instances (None: all of them).

    Returns:
        coords Mx2 float (x, y) and labels M int: 1 in a false negative, 0 in a false
        positive, -1 where no error is left (a "not a point" token, i.e. no click).
    """
    fn = gt & ~pred
    error = (fn | (pred & ~gt)) & not_clicked
    xy, has_error = uniform_pixels(error, generator, share)
    # The label is the ground truth under the click: positive exactly in false negatives.
    labels = gt.reshape(gt.shape[0], -1).gather(1, (xy[:, 1] * gt.shape[-1] + xy[:, 0])[:, None])
    labels = torch.where(has_error, labels.squeeze(1).int(), -1)
    xy = xy.float()

    protocol = np.flatnonzero(_np_random(gt.shape[0], rng, share) < cfg.protocol_prob)
    if len(protocol):
        index = torch.as_tensor(protocol, device=gt.device)
        gt_np = gt[index].cpu().numpy()
        pred_np = pred[index].cpu().numpy()
        free_np = not_clicked[index].cpu().numpy()
        for row, i in enumerate(protocol):
            click = next_click(gt_np[row], pred_np[row], free_np[row])
            if click is None:
                labels[i] = -1
            else:
                xy[i, 0], xy[i, 1] = float(click.x), float(click.y)
                labels[i] = int(click.positive)
    return xy, labels


# --------------------------------------------------------------------------- decoding


def decode_all_tokens(
    sam: Sam,
    embeddings: torch.Tensor,
    prompts: Prompts,
    mask_input: torch.Tensor | None,
    hq_features: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the decoder for M prompts and return all four mask tokens.

    Arguments:
        embeddings: MxCxhxw, the image embedding of each instance's image.
        mask_input: Mx1xLxL logits from the previous round, or None.
        hq_features: HQ-SAM only (required then): Mx(C/8)xLxL, each instance's image's
            ``Sam.hq_features``.

    Returns:
        logits Mx(1+K)xLxL (token 0 = single-mask output; HQ-SAM: Mx(1+K+1)xLxL, the HQ mask
        last) and iou_pred Mx(1+K).
    """
    if sam.is_hq and hq_features is None:
        raise ValueError("HQ-SAM decoding needs hq_features")
    # The prompt encoder runs in float32 even under bf16 autocast: its random Fourier features
    # take sin/cos of coordinates times a Gaussian matrix, phases of tens of radians that
    # bf16's 8-bit mantissa would blur by a quarter turn (the predictor also keeps it float32).
    fp32 = torch.autocast(embeddings.device.type, enabled=False)
    with fp32:
        image_pe = sam.prompt_encoder.get_dense_pe()
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for use_box in (False, True):
        index = torch.nonzero(prompts.is_box == use_box).squeeze(1)
        if index.numel() == 0:
            continue
        coords, labels = prompts.coords[index], prompts.labels[index]
        if not use_box:
            coords = torch.cat([prompts.first_point[index, None], coords], dim=1)
            ones = torch.ones((index.numel(), 1), dtype=labels.dtype, device=labels.device)
            labels = torch.cat([ones, labels], dim=1)
        points = (coords, labels) if coords.shape[1] else None
        with fp32:
            sparse, dense = sam.prompt_encoder(
                points=points,
                boxes=prompts.boxes[index] if use_box else None,
                masks=None if mask_input is None else mask_input[index].float(),
            )
        hq = {} if hq_features is None else {"hq_features": hq_features[index]}
        logits, iou = sam.mask_decoder.predict_masks(
            image_embeddings=embeddings[index],
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            **hq,
        )
        parts.append((index, logits, iou))
    if len(parts) == 1:
        return parts[0][1], parts[0][2]
    order = torch.cat([p[0] for p in parts])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return torch.cat([p[1] for p in parts])[inverse], torch.cat([p[2] for p in parts])[inverse]


def simulate(
    sam: Sam,
    image_embeddings: torch.Tensor,
    image_index: torch.Tensor,
    gt: torch.Tensor,
    cfg: SimulationConfig,
    *,
    generator: torch.Generator,
    rng: np.random.Generator,
    early_features: torch.Tensor | None = None,
    share: Share | None = None,
) -> list[RoundOutput]:
    """Run all prompt rounds for the M instances of a batch; gradients flow through every
    trained round's decoder run into ``image_embeddings`` (fed-back masks are detached).

    Arguments:
        image_embeddings: BxCxhxw, one per image of the batch.
        early_features: HQ-SAM only (required then): Bxh'xw'xD, the images' early features.
        image_index: M long, the image of each instance.
        gt: MxSxS bool ground-truth masks at the input resolution (non-empty).
        generator: CPU generator for point and box draws; rng: round schedule and click
            policy. Both seeded per step by the caller, which makes a step reproducible.
        share: under DistributedDataParallel, these instances' rows among the step's global
            batch; both generators must then be seeded alike on every rank (module docstring).

    Returns:
        One ``RoundOutput`` per round (``cfg.rounds`` of them).
    """
    side = gt.shape[-1]
    embeddings = image_embeddings[image_index]
    hq_features = None
    if sam.is_hq:
        if early_features is None:
            raise ValueError("HQ-SAM simulation needs the images' early features")
        # Once per image, shared by every round (and its gradient summed over them).
        hq_features = sam.hq_features(image_embeddings, early_features)[image_index]
    prompts = first_prompts(gt, cfg, generator, share)
    not_clicked = torch.ones_like(gt)
    rows = torch.arange(gt.shape[0], device=gt.device)
    for_points = prompts.first_point.long()
    not_clicked[rows, for_points[:, 1], for_points[:, 0]] = ~prompts.is_box

    outputs: list[RoundOutput] = []
    mask_input: torch.Tensor | None = None
    shown_mask: torch.Tensor | None = None
    kinds = round_schedule(cfg.rounds, cfg.no_point_rounds, rng)
    trained = trained_rounds(cfg.rounds, cfg.loss_rounds, rng)
    for r, kind in enumerate(kinds):
        if kind == "point":
            assert shown_mask is not None
            xy, labels = corrective_clicks(gt, shown_mask, not_clicked, cfg, generator, rng, share)
            clicked = labels >= 0
            pix = xy.long()
            not_clicked[rows[clicked], pix[clicked, 1], pix[clicked, 0]] = False
            prompts = prompts.add(xy, labels)
        with torch.set_grad_enabled(torch.is_grad_enabled() and r in trained):
            logits, iou_pred = decode_all_tokens(sam, embeddings, prompts, mask_input, hq_features)
        n_tokens = iou_pred.shape[1]
        hq_logits = logits[:, n_tokens:] if sam.is_hq else None
        logits = logits[:, :n_tokens]
        with torch.no_grad():
            # The annotator sees the multimask output with the best predicted IoU after the
            # first prompt, as the predictor shows it; later rounds show the single mask.
            first = kind == "first"
            shown = 1 + iou_pred[:, 1:].argmax(dim=1) if first else torch.zeros_like(rows)
            chosen = logits[rows, shown].detach().float()[:, None]
            if hq_logits is not None:
                chosen = chosen + hq_logits.detach().float()
            mask_input = chosen
            shown_mask = (
                F.interpolate(chosen, (side, side), mode="bilinear", align_corners=False)[:, 0]
                > sam.mask_threshold
            )
        outputs.append(
            RoundOutput(
                logits=logits,
                iou_pred=iou_pred,
                kind=kind,
                shown=shown,
                trained=r in trained,
                hq_logits=hq_logits,
            )
        )
    return outputs

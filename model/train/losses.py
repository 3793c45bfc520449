"""SAM's training losses (SA paper, appendix A), over the rounds of the prompt simulation.

- Mask loss: focal + dice at 20:1 (the paper's ratio), per predicted mask.
- IoU head: mean squared error between each token's predicted IoU and the true IoU of its
  thresholded mask with the ground truth (target detached), weight 1.
- First prompt (ambiguous): of the three multimask outputs only the one with the lowest mask
  loss is back-propagated; the IoU head is trained on all three.
- Later rounds: the single-mask output (DECISIONS item 4).
- HQ-SAM: the HQ mask (``RoundOutput.hq_logits``) gets the same focal + dice, in every
  round, weight ``hq``. On the HQ mask alone, not on SAM mask + HQ mask: the official recipe
  (sam-hq ``train.py``) trains the HQ output alone (``hq_token_only=True``), and official
  checkpoints were trained so. ``sam_outputs=False`` (``--mode hq``: the base model frozen)
  drops SAM's own terms, mask and IoU head, which could only reach the HQ token through the
  token attention and are not the official objective.
- Issue 13, lesson 2: the single-mask output got far less training than the three and was much
  worse after the first click, so it is also trained on the first round (``single_first``),
  and the three multimask outputs may keep training in later rounds (``multimask_later``,
  min-over-three again) so that "best of three by predicted IoU" stays a fair alternative at
  prediction time. ``single_first=0, multimask_later=0`` is the paper's recipe.

Resolution: the loss is computed on the decoder's low-res logits (LxL, L = S / 4, 256 for a
1024 px input) against the low-res target, which is the exact fraction of each cell covered by
the full-resolution mask (soft targets; focal and dice take them as they are). That is 16x
fewer pixels than upsampling the logits to SxS, which matters on a CPU with 11 rounds of many
masks, and it trains exactly the logits that are fed back. A target of another size (e.g. the
SxS masks) makes the logits be upsampled bilinearly to it, for a full-resolution loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.train.simulate import RoundOutput


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Weights of the loss terms; the defaults are the paper's (20:1:1) plus issue 13's."""

    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    single_first: float = 1.0
    multimask_later: float = 1.0
    hq: float = 1.0  # weight of the HQ mask's focal + dice (HQ-SAM only)
    sam_outputs: bool = True  # train SAM's own outputs (False: only the HQ mask)


@dataclass
class LossTerms:
    """The total loss (scalar with graph) and detached parts for logging."""

    total: torch.Tensor
    focal: float
    dice: float
    iou_mse: float
    first_iou: float  # true IoU of the shown mask after the first prompt
    last_iou: float  # after the last round
    hq_focal: float = float("nan")  # the HQ mask's (HQ-SAM only)
    hq_dice: float = float("nan")


def _match(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MxKxLxL logits upsampled to the target's MxHxW size when they differ."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, target.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def sigmoid_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss (Lin et al.) averaged over pixels, one value per mask.

    logits: MxKxHxW; target: MxHxW in [0, 1] (soft allowed). Returns MxK.
    ``alpha < 0`` disables the class weighting.
    """
    logits = _match(logits, target).float()
    t = target[:, None].to(logits.dtype).expand_as(logits)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss.flatten(2).mean(dim=2)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice (+1 smoothing, as SAM 2's code), one value per mask.

    logits: MxKxHxW; target: MxHxW in [0, 1]. Returns MxK.
    """
    logits = _match(logits, target).float()
    p = torch.sigmoid(logits).flatten(2)
    t = target[:, None].to(p.dtype).flatten(2)
    numerator = 2 * (p * t).sum(dim=2)
    denominator = p.sum(dim=2) + t.sum(dim=2)
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """True IoU of each thresholded mask (logit > 0) with the target, MxK (no gradient).

    A soft target counts each cell by its covered fraction, so the low-res IoU approximates
    the full-resolution one. Empty prediction and empty target: IoU 1.
    """
    pred = (_match(logits, target) > 0).float().flatten(2)
    t = target[:, None].float().flatten(2)
    inter = (pred * t).sum(dim=2)
    union = (pred + t - pred * t).sum(dim=2)
    return torch.where(union > 0, inter / union.clamp(min=1e-9), 1.0)


def mask_loss(
    logits: torch.Tensor, target: torch.Tensor, cfg: LossConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-mask combined loss ``focal * w_f + dice * w_d`` and its two parts, each MxK."""
    focal = sigmoid_focal_loss(logits, target, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
    dice = dice_loss(logits, target)
    return cfg.focal * focal + cfg.dice * dice, focal, dice


def min_over_masks(combined: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest loss of each row and its index: MxK -> (M, M long). Only the chosen mask
    gets a gradient."""
    best = combined.detach().argmin(dim=1)
    return combined.gather(1, best[:, None]).squeeze(1), best


def round_loss(
    out: RoundOutput, target: torch.Tensor, cfg: LossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss of one round for M instances, averaged over them.

    Arguments:
        out: the round's logits Mx4xLxL and IoU predictions Mx4 (token 0 = single mask), and
            HQ-SAM's HQ logits Mx1xLxL.
        target: MxLxL (or MxSxS) ground truth in [0, 1].

    Returns:
        The scalar loss and detached parts (focal, dice of the trained masks; IoU MSE; for
        HQ-SAM hq_focal, hq_dice).
    """
    parts: dict[str, torch.Tensor] = {}
    loss = out.logits.new_zeros((), dtype=torch.float32)
    if cfg.sam_outputs:
        loss, parts = _sam_outputs_loss(out, target, cfg)
    if out.hq_logits is not None and cfg.hq > 0:
        hq_combined, hq_focal, hq_dice = mask_loss(out.hq_logits, target, cfg)  # Mx1 each
        loss = loss + cfg.hq * hq_combined[:, 0].mean()
        with torch.no_grad():
            parts["hq_focal"] = hq_focal.mean()
            parts["hq_dice"] = hq_dice.mean()
            if not cfg.sam_outputs:
                # What is trained is the HQ mask: log it under the usual names too.
                parts["focal"], parts["dice"] = parts["hq_focal"], parts["hq_dice"]
                parts["iou_mse"] = hq_focal.new_zeros(())
    if not parts:
        raise ValueError("nothing to train: sam_outputs is off and the model has no HQ mask")
    if out.hq_logits is not None or "shown_iou" not in parts:
        parts["shown_iou"] = mask_iou(out.shown_logits(), target)[:, 0].mean()
    return loss, parts


def _sam_outputs_loss(
    out: RoundOutput, target: torch.Tensor, cfg: LossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SAM's own terms of one round: masks (min over three, single mask) and IoU head."""
    combined, focal, dice = mask_loss(out.logits, target, cfg)  # Mx4 each
    true_iou = mask_iou(out.logits, target)
    iou_err = (out.iou_pred.float() - true_iou) ** 2  # Mx4

    first = out.kind == "first"
    single_w = cfg.single_first if first else 1.0
    multi_w = 1.0 if first else cfg.multimask_later
    multi, best = min_over_masks(combined[:, 1:])
    rows = torch.arange(combined.shape[0], device=combined.device)

    mask_term = single_w * combined[:, 0] + multi_w * multi
    # The IoU head is trained for every token whose mask is trained this round.
    iou_tokens = [0] if single_w > 0 else []
    if multi_w > 0:
        iou_tokens += [1, 2, 3]
    iou_term = iou_err[:, iou_tokens].mean(dim=1) if iou_tokens else iou_err[:, 0] * 0
    loss = (mask_term + cfg.iou * iou_term).mean()

    weight = single_w + multi_w
    with torch.no_grad():
        parts = {
            "focal": (single_w * focal[:, 0] + multi_w * focal[rows, 1 + best]).mean() / weight,
            "dice": (single_w * dice[:, 0] + multi_w * dice[rows, 1 + best]).mean() / weight,
            "iou_mse": iou_term.mean(),
            "shown_iou": true_iou[rows, out.shown].mean(),  # replaced for HQ-SAM
        }
    return loss, parts


def interactive_loss(
    rounds: Sequence[RoundOutput], target: torch.Tensor, cfg: LossConfig
) -> LossTerms:
    """Mean of the trained rounds' losses (so the learning rate does not depend on how many).

    rounds: from ``model.train.simulate.simulate``; target: MxLxL low-res (or MxSxS) masks.
    Logged parts cover every round; ``first_iou`` / ``last_iou`` the first and last.
    """
    if not any(out.trained for out in rounds):
        raise ValueError("no trained round")
    losses, parts = zip(*(round_loss(out, target, cfg) for out in rounds), strict=True)
    total = torch.stack([loss for loss, out in zip(losses, rounds, strict=True) if out.trained])
    total = total.mean()

    def mean_of(key: str) -> float:
        return float(torch.stack([p[key] for p in parts]).mean())

    hq = "hq_focal" in parts[0]
    return LossTerms(
        total=total,
        focal=mean_of("focal"),
        dice=mean_of("dice"),
        iou_mse=mean_of("iou_mse"),
        first_iou=float(parts[0]["shown_iou"]),
        last_iou=float(parts[-1]["shown_iou"]),
        hq_focal=mean_of("hq_focal") if hq else float("nan"),
        hq_dice=mean_of("hq_dice") if hq else float("nan"),
    )

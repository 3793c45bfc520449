"""The standard interactive-segmentation protocol: simulated clicks, mIoU@k and NoC.

The click simulator follows RITM (SamsungLabs/ritm_interactive_segmentation,
``isegm/inference/clicker.py``):

- the error regions are false negatives (object not predicted) and false positives (predicted,
  not object); before the first click the prediction is empty, so the first click goes on the
  object;
- each region's distance transform is taken with the image padded by one background pixel,
  so the image border counts as boundary (a click never lands on the edge of an object that
  touches the border);
- the click goes to the farthest-from-boundary point of whichever region has the larger
  maximum distance: positive in a false negative, negative in a false positive (a tie goes to
  the negative click, as in RITM); pixels already clicked are never clicked again; among
  equally far points the first in raster order wins.

Unlike RITM, when the prediction has no error left the simulation stops (RITM would add a
meaningless negative click at pixel (0, 0)): the annotator would stop too.

Metrics per instance: the IoU and the boundary IoU after each click. Aggregates: mIoU@k (mean
IoU after k clicks), mBIoU@k (mean boundary IoU after k clicks), NoC@t (clicks needed to reach IoU >= t, ``max_clicks`` when never reached, as RITM's
``compute_noc_metric``), seconds per click (predictor time: ``set_image`` + ``predict``; wall
clock, and the process's CPU time beside it, which is the fairer figure on a shared machine
for a single-threaded predictor such as GrabCut).
Instances that stop early (no error left, or ``stop_iou`` reached) keep their last IoU for
the later clicks; with ``stop_iou`` >= t and at least ``max(k)`` clicks before stopping,
mIoU@k and NoC@t are exactly what the full run would give.

Boundary IoU (Cheng et al. 2021, the figure HQ-SAM reports next to mIoU): the IoU of the two
masks' boundary bands, each the part of the mask within ``d`` pixels of its contour, ``d`` = 2%
of the image diagonal (see ``boundary_iou``). It weighs the edge of a large object as much as
the edge of a small one, where mask IoU hardly notices a ragged edge on a large object.

Box prompts (``prompt="box"``, HQ-SAM's evaluation): one prompt per object, the tight box of the
ground truth, single-mask output; mIoU@1 and mBIoU@1 are then the box figures (NoC does not
apply).

Command line::

    python -m model.evaluate --predictor grabcut --sets davis345 --split val --json out.json
    python -m model.evaluate --predictor checkpoint:vit_b_hq=sam_hq_vit_b.pth --prompt box \
        --sets davis345
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from tqdm import tqdm

from model.train.data import Instance, iter_instances, load_coco_set, shared_data_root
from model.types import InteractivePredictor, Prediction

#: "best": multimask output at every click, keep the mask with the highest predicted IoU.
#: "single": multimask (best by predicted IoU) at the first click only, the single-mask output
#: after (SAM's convention: only the first click is ambiguous).
OutputMode = Literal["best", "single"]
#: "clicks": the interactive protocol; "box": one tight ground-truth box per object.
PromptMode = Literal["clicks", "box"]

#: Boundary width of Boundary IoU as a fraction of the image diagonal (Cheng et al.: 0.02).
BOUNDARY_DILATION = 0.02

MIOU_AT = (1, 3, 5)
NOC_AT = (0.85, 0.90)


# --------------------------------------------------------------------------- predictors


PredictorFactory = Callable[[str], InteractivePredictor]


def _make_grabcut(arg: str) -> InteractivePredictor:
    from model.grabcut import GrabCutPredictor

    if arg:
        raise ValueError(f"the grabcut predictor takes no argument, got {arg!r}")
    return GrabCutPredictor()


def _make_checkpoint(arg: str) -> InteractivePredictor:
    """``checkpoint:PATH`` (ours: the configuration is named inside) or
    ``checkpoint:CONFIG=PATH`` (e.g. an official ``vit_b=sam_vit_b_01ec64.pth``)."""
    from model.build import build_sam
    from model.checkpoints import read_checkpoint
    from model.predictor import SamPredictor

    config, sep, path = arg.partition("=")
    if not sep:
        path = arg
        config = read_checkpoint(path).get("config", {}).get("name", "")
        if not config:
            raise ValueError(f"{path} names no configuration; use checkpoint:CONFIG=PATH")
    return SamPredictor(build_sam(config, checkpoint=path))


#: Predictor name -> factory taking whatever follows ``name:`` in the spec ("" when nothing);
#: more with :func:`register_predictor`.
PREDICTORS: dict[str, PredictorFactory] = {
    "grabcut": _make_grabcut,
    "checkpoint": _make_checkpoint,
}


def register_predictor(name: str, factory: PredictorFactory) -> None:
    """Make ``--predictor name[:arg]`` build ``factory(arg)``."""
    PREDICTORS[name] = factory


def make_predictor(spec: str) -> InteractivePredictor:
    """Build a predictor from a spec ``name`` or ``name:arg`` (e.g. ``grabcut``).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    name, _, arg = spec.partition(":")
    factory = PREDICTORS.get(name)
    if factory is None:
        known = ", ".join(sorted(PREDICTORS))
        raise ValueError(f"unknown predictor {spec!r}; known: {known}")
    return factory(arg)


# --------------------------------------------------------------------------- clicks


@dataclass(frozen=True)
class Click:
    """A simulated click at pixel (x, y); positive means "this is the object"."""

    x: int
    y: int
    positive: bool


def next_click(
    gt: np.ndarray, pred: np.ndarray, not_clicked: np.ndarray | None = None
) -> Click | None:
    """Where the simulated annotator clicks next (RITM's rule; see module docstring).

    Arguments:
        gt: HxW bool ground truth.
        pred: HxW bool current prediction (all False before the first click).
        not_clicked: HxW bool, False at pixels already clicked; None = no click yet.

    Returns:
        The click, or None when the prediction has no error (left) to click on.
    """
    fn = gt & ~pred
    fp = ~gt & pred
    fn_dt = _padded_distance(fn)
    fp_dt = _padded_distance(fp)
    if not_clicked is not None:
        fn_dt *= not_clicked
        fp_dt *= not_clicked
    fn_max = float(fn_dt.max())
    fp_max = float(fp_dt.max())
    if fn_max == 0.0 and fp_max == 0.0:
        return None
    positive = fn_max > fp_max
    dt, best = (fn_dt, fn_max) if positive else (fp_dt, fp_max)
    # np.argmax returns the first maximum in raster order, as RITM's np.where(...)[0].
    y, x = np.unravel_index(int(np.argmax(dt == best)), dt.shape)
    return Click(x=int(x), y=int(y), positive=positive)


def _padded_distance(region: np.ndarray) -> np.ndarray:
    """HxW bool -> HxW float32 exact L2 distance to the nearest non-region pixel or the border."""
    padded = np.pad(region.astype(np.uint8), 1, mode="constant")
    dt = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dt[1:-1, 1:-1]


def iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """IoU of two HxW bool masks; 1.0 when both are empty."""
    union = int(np.count_nonzero(gt | pred))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(gt & pred)) / union


def mask_boundary(mask: np.ndarray, dilation_ratio: float = BOUNDARY_DILATION) -> np.ndarray:
    """The boundary band of an HxW bool mask: its pixels within ``d`` of the outside.

    ``d = max(1, round(dilation_ratio * sqrt(H^2 + W^2)))``. A pixel is in the band when some
    pixel at chessboard distance <= d (a (2d+1)-square around it) is outside the mask; the
    outside includes everything beyond the image border, so an object cut by the border has
    a boundary there (Boundary IoU's reference code: ``mask - erode(pad(mask), 3x3, d times)``).
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * math.hypot(h, w))))
    padded = np.pad(mask.astype(np.uint8), 1, mode="constant")
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:-1, 1:-1]
    return mask & ~eroded.astype(bool)


def boundary_iou(
    gt: np.ndarray,
    pred: np.ndarray,
    dilation_ratio: float = BOUNDARY_DILATION,
    *,
    gt_boundary: np.ndarray | None = None,
) -> float:
    """Boundary IoU (Cheng et al. 2021) of two HxW bool masks: |G_d & P_d| / |G_d | P_d| with
    X_d = ``mask_boundary(X)``; 1.0 when both bands are empty (both masks empty).

    gt_boundary: ``mask_boundary(gt, dilation_ratio)`` when already computed (it is the same
    for every click on an object).
    """
    g = mask_boundary(gt, dilation_ratio) if gt_boundary is None else gt_boundary
    p = mask_boundary(pred, dilation_ratio)
    union = int(np.count_nonzero(g | p))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(g & p)) / union


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """The tight box of an HxW bool mask, (x0, y0, x1, y1) float: inclusive pixel bounds, as
    ``torchvision.ops.masks_to_boxes`` and HQ-SAM's evaluation make it. None when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)


def _choose(pred: Prediction, multimask: bool) -> int:
    """Index of the output mask to keep: highest predicted IoU among C (NaNs ignored)."""
    scores = np.asarray(pred.iou_predictions, dtype=np.float64).reshape(-1)
    if not multimask or scores.size <= 1 or np.isnan(scores).all():
        return 0
    return int(np.nanargmax(scores))


# --------------------------------------------------------------------------- protocol


@dataclass
class InstanceResult:
    """One instance's run. ``ious[i]`` is the IoU after click i + 1 (clicks actually made),
    ``bious[i]`` the boundary IoU then; with box prompts, one entry each and no click."""

    set_name: str
    image_id: int
    annotation_id: int
    ious: list[float]
    clicks: list[tuple[int, int, bool]]
    seconds: float
    cpu_seconds: float = math.nan
    bious: list[float] = field(default_factory=list)

    def iou_after(self, k: int) -> float:
        """IoU after k clicks; an instance that stopped earlier keeps its last IoU.

        An instance with no click at all (empty ground truth: nothing to click on) counts 0.
        """
        return _after(self.ious, k)

    def biou_after(self, k: int) -> float:
        """Boundary IoU after k clicks, carried forward like ``iou_after``; NaN when the run
        recorded none (a result made before boundary IoU was measured)."""
        if self.ious and not self.bious:
            return math.nan
        return _after(self.bious, k)

    def noc(self, threshold: float, max_clicks: int) -> int:
        """Clicks needed to reach IoU >= threshold; ``max_clicks`` when never reached."""
        for i, value in enumerate(self.ious[:max_clicks]):
            if value >= threshold:
                return i + 1
        return max_clicks


def _after(values: Sequence[float], k: int) -> float:
    if not values:
        return 0.0
    return values[min(k, len(values)) - 1]


@dataclass
class InstanceRun:
    """What one object's run measured: IoU and boundary IoU after each prompt, the clicks,
    and the wall / CPU seconds spent on boundary IoU (evaluator time, not the predictor's)."""

    ious: list[float]
    bious: list[float]
    clicks: list[Click]
    boundary_seconds: float = 0.0
    boundary_cpu_seconds: float = 0.0


def evaluate_instance(
    predictor: InteractivePredictor,
    gt: np.ndarray,
    *,
    max_clicks: int = 20,
    mode: OutputMode = "best",
    stop_iou: float | None = None,
    min_clicks: int = max(MIOU_AT),
) -> tuple[list[float], list[Click]]:
    """``run_instance`` without the boundary IoU: (IoU after each click, the clicks)."""
    run = run_instance(
        predictor,
        gt,
        max_clicks=max_clicks,
        mode=mode,
        stop_iou=stop_iou,
        min_clicks=min_clicks,
    )
    return run.ious, run.clicks


def run_instance(
    predictor: InteractivePredictor,
    gt: np.ndarray,
    *,
    max_clicks: int = 20,
    mode: OutputMode = "best",
    stop_iou: float | None = None,
    min_clicks: int = max(MIOU_AT),
) -> InstanceRun:
    """Run the click protocol on one object; the predictor's image must already be set.

    Arguments:
        gt: HxW bool ground-truth mask.
        max_clicks: at most this many clicks.
        mode: which output to keep when the predictor gives several ("best" or "single").
        stop_iou: stop once IoU >= this after at least ``min_clicks`` clicks; None = never
            (every instance gets ``max_clicks`` clicks unless no error is left).
        min_clicks: see ``stop_iou``.

    Returns:
        The IoU and boundary IoU after each click made, and the clicks.
    """
    if mode not in ("best", "single"):
        raise ValueError(f"unknown output mode {mode!r}; expected 'best' or 'single'")
    gt = gt.astype(bool, copy=False)
    timer = _Timer()
    with timer:
        gt_boundary = mask_boundary(gt)
    pred = np.zeros_like(gt)
    not_clicked = np.ones_like(gt)
    clicks: list[Click] = []
    ious: list[float] = []
    bious: list[float] = []
    mask_input: np.ndarray | None = None
    for _ in range(max_clicks):
        click = next_click(gt, pred, not_clicked)
        if click is None:
            break
        clicks.append(click)
        not_clicked[click.y, click.x] = False
        coords = np.array([[c.x, c.y] for c in clicks], dtype=np.float32)
        labels = np.array([1 if c.positive else 0 for c in clicks], dtype=np.int32)
        multimask = mode == "best" or len(clicks) == 1
        out = predictor.predict(
            point_coords=coords,
            point_labels=labels,
            mask_input=mask_input,
            multimask_output=multimask,
        )
        index = _choose(out, multimask)
        pred = np.asarray(out.masks[index], dtype=bool)
        if pred.shape != gt.shape:
            raise ValueError(f"predictor returned a {pred.shape} mask for a {gt.shape} image")
        # Feed the kept mask's logits back, 1x256x256, as SAM's interactive loop does.
        mask_input = None if out.low_res_logits is None else out.low_res_logits[index][None]
        ious.append(iou(gt, pred))
        with timer:
            bious.append(boundary_iou(gt, pred, gt_boundary=gt_boundary))
        if stop_iou is not None and len(clicks) >= min_clicks and ious[-1] >= stop_iou:
            break
    return InstanceRun(ious, bious, clicks, timer.seconds, timer.cpu_seconds)


def run_box_instance(predictor: InteractivePredictor, gt: np.ndarray) -> InstanceRun:
    """One box prompt, the tight box of ``gt``, single-mask output (a box is not ambiguous;
    HQ-SAM's evaluation). No prompt for an empty ground truth (no box to draw)."""
    gt = gt.astype(bool, copy=False)
    box = mask_box(gt)
    if box is None:
        return InstanceRun(ious=[], bious=[], clicks=[])
    out = predictor.predict(box=box, multimask_output=False)
    pred = np.asarray(out.masks[0], dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"predictor returned a {pred.shape} mask for a {gt.shape} image")
    timer = _Timer()
    with timer:
        biou = boundary_iou(gt, pred)
    return InstanceRun([iou(gt, pred)], [biou], [], timer.seconds, timer.cpu_seconds)


class _Timer:
    """Accumulates wall and CPU seconds over the ``with`` blocks it is used in."""

    def __init__(self) -> None:
        self.seconds = self.cpu_seconds = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter(), time.process_time()

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._start[0]
        self.cpu_seconds += time.process_time() - self._start[1]


def evaluate(
    predictor: InteractivePredictor,
    instances: Iterable[Instance],
    *,
    max_clicks: int = 20,
    mode: OutputMode = "best",
    stop_iou: float | None = None,
    progress: bool = False,
    total: int | None = None,
    prompt: PromptMode = "clicks",
) -> list[InstanceResult]:
    """Run the protocol on every instance; ``set_image`` is called once per consecutive image.

    prompt: "clicks" (the interactive protocol; ``max_clicks``, ``mode`` and ``stop_iou``
    apply) or "box" (one tight ground-truth box per object).
    """
    if prompt not in ("clicks", "box"):
        raise ValueError(f"unknown prompt mode {prompt!r}; expected 'clicks' or 'box'")
    results: list[InstanceResult] = []
    current: tuple[str, int] | None = None
    set_image_seconds = set_image_cpu = 0.0
    for inst in tqdm(instances, total=total, disable=not progress, unit="obj", smoothing=0.1):
        key = (inst.set_name, inst.image.id)
        if key != current:
            image = inst.load_image()
            start, start_cpu = time.perf_counter(), time.process_time()
            predictor.set_image(image)
            set_image_seconds = time.perf_counter() - start
            set_image_cpu = time.process_time() - start_cpu
            current = key
        else:
            # The embedding is shared with the previous instance of the same image.
            set_image_seconds = set_image_cpu = 0.0
        gt = inst.mask()
        start, start_cpu = time.perf_counter(), time.process_time()
        if prompt == "box":
            run = run_box_instance(predictor, gt)
        else:
            run = run_instance(predictor, gt, max_clicks=max_clicks, mode=mode, stop_iou=stop_iou)
        # Boundary IoU is the evaluator's cost, not the predictor's: taken out of the time.
        seconds = time.perf_counter() - start + set_image_seconds - run.boundary_seconds
        cpu_seconds = time.process_time() - start_cpu + set_image_cpu - run.boundary_cpu_seconds
        results.append(
            InstanceResult(
                set_name=inst.set_name,
                image_id=inst.image.id,
                annotation_id=inst.annotation.id,
                ious=run.ious,
                clicks=[(c.x, c.y, c.positive) for c in run.clicks],
                seconds=seconds,
                cpu_seconds=cpu_seconds,
                bious=run.bious,
            )
        )
    return results


# --------------------------------------------------------------------------- metrics


@dataclass
class Metrics:
    """Aggregates over instances; ``per_image`` holds per-image means for a paired bootstrap.

    ``miou`` maps k -> mIoU@k; ``mbiou`` k -> mean boundary IoU after k clicks; ``noc`` maps
    "85"/"90" -> mean NoC; ``noc_failures`` how many instances never reached the threshold
    within ``max_clicks``. With box prompts (``prompt == "box"``) k is 1 only (the box), NoC
    is NaN and ``noc_failures`` counts the objects under the threshold.
    """

    n_instances: int
    n_images: int
    max_clicks: int
    miou: dict[int, float]
    noc: dict[str, float]
    noc_failures: dict[str, int]
    seconds_per_click: float
    cpu_seconds_per_click: float
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    mbiou: dict[int, float] = field(default_factory=dict)
    prompt: str = "clicks"


def _noc_key(threshold: float) -> str:
    return f"{round(threshold * 100):d}"


def summarize(
    results: Sequence[InstanceResult], max_clicks: int = 20, *, prompt: PromptMode = "clicks"
) -> Metrics:
    """mIoU@1/3/5, mBIoU@1/3/5, NoC@85/90 and per-image values (keys ``"<set>/<image id>"``).

    prompt: "box" for results of box prompts (one prompt each: ``max_clicks`` is taken as 1
    and NoC is NaN).
    """
    if prompt == "box":
        max_clicks = 1
    # mIoU@k is undefined (NaN) for k > max_clicks rather than a carried-forward figure.
    miou = {
        k: _mean([r.iou_after(k) for r in results]) if k <= max_clicks else math.nan
        for k in MIOU_AT
    }
    mbiou = {
        k: _mean([r.biou_after(k) for r in results]) if k <= max_clicks else math.nan
        for k in MIOU_AT
    }
    nocs = {t: [r.noc(t, max_clicks) for r in results] for t in NOC_AT}
    n_clicks = sum(len(r.ious) for r in results)
    total_seconds = sum(r.seconds for r in results)
    total_cpu = sum(r.cpu_seconds for r in results)

    by_image: dict[str, list[InstanceResult]] = {}
    for r in results:
        by_image.setdefault(f"{r.set_name}/{r.image_id}", []).append(r)
    per_image: dict[str, dict[str, float]] = {}
    for key, group in by_image.items():
        row = {f"miou@{k}": _mean([r.iou_after(k) for r in group]) for k in MIOU_AT}
        row.update({f"mbiou@{k}": _mean([r.biou_after(k) for r in group]) for k in MIOU_AT})
        for t in NOC_AT:
            row[f"noc@{_noc_key(t)}"] = _mean([float(r.noc(t, max_clicks)) for r in group])
        per_image[key] = row

    return Metrics(
        n_instances=len(results),
        n_images=len(by_image),
        max_clicks=max_clicks,
        miou=miou,
        noc={
            _noc_key(t): math.nan if prompt == "box" else _mean([float(n) for n in v])
            for t, v in nocs.items()
        },
        noc_failures={
            _noc_key(t): sum(1 for r in results if not _reached(r, t, max_clicks)) for t in NOC_AT
        },
        seconds_per_click=total_seconds / n_clicks if n_clicks else math.nan,
        cpu_seconds_per_click=total_cpu / n_clicks if n_clicks else math.nan,
        per_image=per_image,
        mbiou=mbiou,
        prompt=prompt,
    )


def _reached(result: InstanceResult, threshold: float, max_clicks: int) -> bool:
    return any(v >= threshold for v in result.ious[:max_clicks])


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Paired bootstrap of mean(a - b) over the same items (e.g. per-image mIoU of two models).

    Arguments:
        a, b: N values each, item i of ``a`` paired with item i of ``b``.
        n: bootstrap resamples.
        seed: for the resampling RNG.

    Returns:
        (mean difference, 2.5th percentile, 97.5th percentile) -- a 95% interval; a candidate
        beats the current version when ``lo > 0`` (DECISIONS.md item 7).
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.ndim != 1 or diff.size == 0:
        raise ValueError("a and b must be non-empty 1-D sequences of the same length")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(n, diff.size))
    means = diff[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(lo), float(hi)


def paired_per_image(
    a: Metrics, b: Metrics, metric: str = "miou@5"
) -> tuple[np.ndarray, np.ndarray]:
    """The per-image values of ``metric`` on the images both runs share, in the same order."""
    keys = sorted(set(a.per_image) & set(b.per_image))
    return (
        np.array([a.per_image[k][metric] for k in keys]),
        np.array([b.per_image[k][metric] for k in keys]),
    )


# --------------------------------------------------------------------------- command line


def format_table(rows: Sequence[tuple[str, Metrics]]) -> str:
    """A fixed-width summary table, one row per (name, metrics); box-prompt rows (all rows
    of one run share the prompt mode) show mIoU, mBIoU and the objects under 90% IoU."""
    if rows and all(m.prompt == "box" for _, m in rows):
        header = (
            f"{'set':<20}{'objects':>8}{'mIoU':>8}{'mBIoU':>8}{'<0.90':>8}"
            f"{'s/box':>9}{'cpu s/box':>12}"
        )
        lines = [header, "-" * len(header)]
        for name, m in rows:
            lines.append(
                f"{name:<20}{m.n_instances:>8d}{m.miou[1]:>8.3f}{m.mbiou[1]:>8.3f}"
                f"{m.noc_failures['90']:>8d}{m.seconds_per_click:>9.3f}"
                f"{m.cpu_seconds_per_click:>12.3f}"
            )
        return "\n".join(lines)
    header = (
        f"{'set':<20}{'objects':>8}{'mIoU@1':>8}{'mIoU@3':>8}{'mIoU@5':>8}{'mBIoU@1':>8}"
        f"{'mBIoU@5':>8}{'NoC@85':>8}{'NoC@90':>8}{'>max@90':>8}{'s/click':>9}"
        f"{'cpu s/click':>12}"
    )
    lines = [header, "-" * len(header)]
    for name, m in rows:
        mbiou = m.mbiou or {1: math.nan, 5: math.nan}
        lines.append(
            f"{name:<20}{m.n_instances:>8d}{m.miou[1]:>8.3f}{m.miou[3]:>8.3f}{m.miou[5]:>8.3f}"
            f"{mbiou[1]:>8.3f}{mbiou[5]:>8.3f}"
            f"{m.noc['85']:>8.2f}{m.noc['90']:>8.2f}{m.noc_failures['90']:>8d}"
            f"{m.seconds_per_click:>9.3f}{m.cpu_seconds_per_click:>12.3f}"
        )
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m model.evaluate",
        description="Interactive-segmentation evaluation (RITM click protocol, mIoU@k, NoC).",
    )
    parser.add_argument("--predictor", default="grabcut", help="spec: grabcut | name:arg")
    parser.add_argument(
        "--sets", nargs="+", required=True, help="set folder names under the data root"
    )
    parser.add_argument("--split", choices=("val", "train", "all"), default="val")
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set")
    parser.add_argument(
        "--skip", type=int, default=0, help="leave out the first N images (before --limit)"
    )
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument("--mode", choices=("best", "single"), default="best")
    parser.add_argument(
        "--prompt",
        choices=("clicks", "box"),
        default="clicks",
        help="clicks: the interactive protocol; box: one tight ground-truth box per object",
    )
    parser.add_argument(
        "--hq-only",
        action="store_true",
        help="HQ-SAM checkpoints: use the HQ mask alone (the official hq_token_only)",
    )
    parser.add_argument(
        "--stop-iou",
        type=float,
        default=None,
        help="stop an object once IoU >= this after 5 clicks (exact NoC up to this threshold)",
    )
    parser.add_argument(
        "--zoom",
        choices=("on", "off"),
        default="off",
        help="checkpoints: zoom in on the object after the first click (model/zoom.py)",
    )
    parser.add_argument("--min-area", type=float, default=0.0, help="skip smaller objects (px)")
    parser.add_argument("--data", type=Path, default=None, help="data root (default: shared)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the table, optionally writes JSON; returns 0."""
    args = _parse_args(argv)
    root = args.data if args.data is not None else shared_data_root()
    if not root.is_dir():
        print(f"data root {root} not found (set MASKLOOP_SHARED_DATA or --data)", file=sys.stderr)
        return 2
    predictor = make_predictor(args.predictor)
    if args.hq_only:
        _set_hq_only(predictor)
    if args.zoom == "on":
        predictor = _zoomed(predictor)
    all_results: list[InstanceResult] = []
    rows: list[tuple[str, Metrics]] = []
    for set_name in args.sets:
        coco_set = load_coco_set(root / set_name)
        instances = list(
            iter_instances(
                coco_set,
                args.split,
                min_area=args.min_area,
                limit_images=args.limit,
                skip_images=args.skip,
            )
        )
        results = evaluate(
            predictor,
            instances,
            max_clicks=args.max_clicks,
            mode=args.mode,
            stop_iou=args.stop_iou,
            progress=True,
            total=len(instances),
            prompt=args.prompt,
        )
        all_results.extend(results)
        rows.append((set_name, summarize(results, args.max_clicks, prompt=args.prompt)))
    if len(rows) > 1:
        rows.append(("all", summarize(all_results, args.max_clicks, prompt=args.prompt)))
    print(format_table(rows))
    if args.json is not None:
        payload = {
            "predictor": args.predictor,
            "split": args.split,
            "mode": args.mode,
            "prompt": args.prompt,
            "hq_only": args.hq_only,
            "zoom": args.zoom,
            "max_clicks": args.max_clicks,
            "stop_iou": args.stop_iou,
            "limit": args.limit,
            "skip": args.skip,
            "metrics": {name: asdict(m) for name, m in rows},
            "instances": [asdict(r) for r in all_results],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return 0


def _set_hq_only(predictor: InteractivePredictor) -> None:
    """``--hq-only``: only an HQ-SAM ``SamPredictor`` has an HQ mask to use alone."""
    from model.predictor import SamPredictor

    if not isinstance(predictor, SamPredictor) or not predictor.model.is_hq:
        raise SystemExit("--hq-only needs an HQ-SAM checkpoint (a configuration ending in _hq)")
    predictor.hq_only = True


def _zoomed(predictor: InteractivePredictor) -> InteractivePredictor:
    """``--zoom on``: a ``SamPredictor`` wrapped in a ``ZoomInPredictor``."""
    from model.predictor import SamPredictor
    from model.zoom import ZoomInPredictor

    if not isinstance(predictor, SamPredictor):
        raise SystemExit("--zoom on needs a checkpoint predictor")
    return ZoomInPredictor(predictor)


if __name__ == "__main__":
    raise SystemExit(main())

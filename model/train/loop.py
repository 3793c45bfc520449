"""The training loop: SAM's recipe (SA paper, appendix A) on a CPU, a GPU or several GPUs.

One step: B augmented images (``model.train.augment``) are encoded once; the decoder then runs
``rounds`` times for all their instances together (``model.train.simulate``), and the losses
of every round (``model.train.losses``) are back-propagated at once through the decoder runs
into the shared image embeddings and the encoder. The encoder, the expensive part, is thus
spent on many masks and prompt rounds. A fully frozen encoder runs without a graph.

Optimiser: AdamW; linear warm-up times cosine (or the paper's step) decay; a lower learning
rate for the pretrained image-encoder parameters (prefix ``image_encoder.``, except the
freshly initialised neck); gradient clipping; bf16 autocast on CUDA only.

Reproducibility. Everything random in a step is seeded from (seed, step, rank): the samples
(``TrainDataset`` is indexed by global sample number), the prompt simulation and the global
torch RNG (stochastic depth). With the model, optimiser and scheduler restored from a
checkpoint, ``--resume`` therefore continues a killed run exactly as if it had never stopped.
The checkpoint also records the RNG states, for the record.

Modes (``TrainConfig.mode``): ``full`` trains everything (``freeze_encoder_stages`` apart);
``decoder`` freezes the whole image encoder; ``hq`` (HQ-SAM configurations only) freezes the
whole base model and trains only HQ-SAM's additions (``model.mask_decoder_hq.HQ_PREFIXES``:
the HQ token, its MLP and the fusion convolutions), on the HQ mask's loss, as the official
recipe. ``--init`` from a plain SAM checkpoint into an HQ configuration loads the base weights
strictly and leaves exactly the HQ parts as initialised, and says so.

Several GPUs (or CPU processes with gloo): launched by ``torchrun``, the step module is
wrapped in DistributedDataParallel (``WORLD_SIZE`` > 1 in the environment); rank 0 writes
checkpoints, logs and validates. ``batch_images`` is per process: N processes train with a
global batch of N x ``batch_images`` images, and a step of theirs is the step one process
would take on that global batch (same samples, same prompts, same gradient, up to float
rounding; tests/model/test_distributed.py checks it), because:

- rank r's images are the r-th slice of the global batch's sample numbers (``_StepBatches``),
  and a sample is a pure function of its number;
- the prompt simulation is seeded per step, not per rank, and each rank keeps its rows of
  draws made for the whole step's instances (``model.train.simulate.Share``);
- the loss is a mean over instances, and ranks hold different numbers of instances (images
  have 1..``masks_per_image``), while DDP averages the ranks' gradients: each rank's loss is
  weighted by its share of the instances (x world / total) before the backward, so that the
  average is the gradient of the mean over all the step's instances.

What stays per rank: the global torch RNG (stochastic depth in the encoder, drawn per sample
from a per-rank seed: the same distribution, other draws), and BatchNorm statistics where an
encoder keeps them in training mode (EfficientNet-Lite's are frozen by default).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from model.build import build_sam
from model.checkpoints import (
    load_state_dict_strict,
    read_checkpoint,
    save_checkpoint,
)
from model.mask_decoder_hq import HQ_PREFIXES
from model.sam import Sam
from model.train.augment import AugmentConfig, TrainDataset, collate, collect_train_images
from model.train.data import Instance, iter_instances, load_coco_set, shared_data_root
from model.train.losses import LossConfig, interactive_loss
from model.train.simulate import Share, SimulationConfig, simulate

LAST_CHECKPOINT = "last.pt"
LOG_FILE = "log.jsonl"
MODEL_FILE = "model.pt"  # fp16 weights + config, what --init and predictors load
#: What ``TrainConfig.mode`` may be (see the module docstring).
MODES = ("full", "decoder", "hq")


# --------------------------------------------------------------------------- configuration


@dataclass(kw_only=True)
class TrainConfig:
    """Everything a run needs. Fields above ``out`` define the recipe and are taken from the
    checkpoint on ``--resume``; the fields from ``out`` down control this invocation only."""

    config: str
    sets: list[str]
    holdout: list[str] = field(default_factory=list)
    data: str | None = None  # data root; None = model.train.data.shared_data_root()
    seed: int = 0
    batch_images: int = 2
    masks_per_image: int = 16
    rounds: int = 11
    loss_rounds: int = 0  # rounds back-propagated per step; 0 = all
    min_area: int = 64
    set_weighting: str = "images"  # how sets share the samples (augment.SET_WEIGHTINGS)
    scale_min: float = 0.5
    scale_max: float = 2.0
    box_prob: float = 0.5
    protocol_prob: float = 0.5
    single_first: float = 1.0
    multimask_later: float = 1.0
    focal_weight: float = 20.0  # the paper's focal : dice = 20 : 1
    focal_alpha: float = 0.25  # foreground weight of the focal loss; < 0 = unweighted
    iou_weight: float = 1.0  # weight of the IoU head's squared error (the paper's: 1)
    lr: float = 2e-4
    encoder_lr_scale: float = 0.1
    new_encoder_prefixes: list[str] = field(default_factory=lambda: ["image_encoder.neck."])
    weight_decay: float = 0.1
    warmup: int = 100
    schedule: str = "cosine"  # cosine | step | constant
    min_lr_ratio: float = 0.01
    clip: float = 1.0
    freeze_encoder_stages: int = 0  # 0 none, N first stages, -1 the whole encoder
    init: str | None = None
    mode: str = "full"  # full | decoder | hq (see the module docstring)

    out: str = "runs/train"
    steps: int | None = None  # total steps of the schedule (and a stop); None = from minutes
    minutes: float | None = None
    resume: str | None = None
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps of this run
    threads: int = 0  # torch CPU threads; 0 = torch's default
    workers: int = 0
    ckpt_every: int = 100
    keep_every: int = 0  # also keep step_XXXXXXX.pt every N steps (0 = never)
    log_every: int = 10
    val_every: int = 0  # 0 = only at the end
    val_at_start: bool = False
    val_images: int = 4  # per set, from the validation split
    val_instances: int = 24  # at most, over all sets
    val_clicks: int = 20
    val_modes: list[str] = field(default_factory=lambda: ["best", "single"])
    progress: bool = True

    #: Fields that only control this invocation (everything else is the recipe).
    CONTROL = (
        "out",
        "steps",
        "minutes",
        "resume",
        "stop_after",
        "threads",
        "workers",
        "ckpt_every",
        "keep_every",
        "log_every",
        "val_every",
        "val_at_start",
        "val_images",
        "val_instances",
        "val_clicks",
        "val_modes",
        "progress",
    )

    def recipe(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.CONTROL}


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    device: torch.device
    #: This call joined the process group, so the end of ``train`` leaves it.
    joined: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    joined = False
    if world > 1 and not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
        joined = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    if cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return Dist(rank=rank, world=world, device=device, joined=joined)


def _broadcast_float(value: float, ctx: Dist) -> float:
    """Rank 0's value on every rank (identity on one process)."""
    if ctx.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.broadcast(t, 0)
    return float(t.item())


# --------------------------------------------------------------------------- parameters


def freeze_encoder_stages(sam: Sam, stages: int) -> list[str]:
    """Freeze the first ``stages`` stages of the image encoder (-1: all of it, neck included).

    EfficientNet: the stem and the blocks of the first N of its 7 stages (a stage starts at
    each block without a residual connection). ViT: the patch embedding, the absolute
    positions and the first N blocks. Returns the names of the frozen parameters.
    """
    encoder = sam.image_encoder
    if stages == 0:
        return []
    if stages < 0:
        frozen = [n for n, _ in encoder.named_parameters()]
    elif hasattr(encoder, "backbone") and hasattr(encoder.backbone, "_blocks"):
        backbone: Any = encoder.backbone
        frozen = [
            f"backbone.{n}"
            for n, _ in backbone.named_parameters()
            if n.startswith(("_conv_stem.", "_bn0."))
        ]
        stage = -1
        for i, block in enumerate(backbone._blocks):
            if not getattr(block, "use_residual", False):
                stage += 1
            if stage < stages:
                frozen += [f"backbone._blocks.{i}.{n}" for n, _ in block.named_parameters()]
    elif hasattr(encoder, "patch_embed") and hasattr(encoder, "blocks"):
        frozen = [
            n
            for n, _ in encoder.named_parameters()
            if n.startswith("patch_embed.") or n == "pos_embed"
        ]
        blocks: Any = encoder.blocks
        for i, block in enumerate(blocks):
            if i < stages:
                frozen += [f"blocks.{i}.{n}" for n, _ in block.named_parameters()]
    else:
        raise ValueError(
            f"don't know the stages of {type(encoder).__name__}; use 0 or -1 (whole encoder)"
        )
    params = dict(encoder.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    return [f"image_encoder.{n}" for n in frozen]


def apply_mode(sam: Sam, mode: str, *, freeze_encoder_stages_: int = 0) -> list[str]:
    """Freeze what ``mode`` does not train; returns the frozen parameters' names.

    full: only the first ``freeze_encoder_stages_`` encoder stages (see
    ``freeze_encoder_stages``); decoder: the whole image encoder; hq: everything but
    ``HQ_PREFIXES`` (an HQ-SAM model is required).
    """
    if mode not in MODES:
        raise ValueError(f"unknown training mode {mode!r}; one of {', '.join(MODES)}")
    if mode == "full":
        return freeze_encoder_stages(sam, freeze_encoder_stages_)
    if mode == "decoder":
        return freeze_encoder_stages(sam, -1)
    if not sam.is_hq:
        raise ValueError("--mode hq trains HQ-SAM's additions: use an HQ configuration (NAME_hq)")
    frozen = []
    for name, param in sam.named_parameters():
        if not name.startswith(HQ_PREFIXES):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def load_init_weights(sam: Sam, path: str | Path) -> list[str]:
    """``--init``: the checkpoint's weights into ``sam``, strictly, except that a plain SAM
    checkpoint may start an HQ-SAM model (HQ parts absent in the file, left as initialised).

    Returns the keys left as initialised (empty unless that case).
    """
    payload = read_checkpoint(path)
    allowed = HQ_PREFIXES if sam.is_hq else ()
    return load_state_dict_strict(sam, payload["model"], allow_missing_prefixes=allowed)


def _no_decay(name: str, param: nn.Parameter, embedding_params: set[int]) -> bool:
    """Biases, norms, embeddings, tokens and position tables are not weight-decayed."""
    return (
        param.ndim < 2 or id(param) in embedding_params or "pos_embed" in name or "rel_pos" in name
    )


def param_groups(
    sam: Sam,
    *,
    lr: float,
    encoder_lr_scale: float,
    weight_decay: float,
    new_encoder_prefixes: Sequence[str],
) -> list[dict[str, Any]]:
    """AdamW groups: (pretrained encoder | the rest) x (decay | no decay), empty ones dropped.

    Pretrained encoder = parameters named ``image_encoder.*`` except ``new_encoder_prefixes``
    (the neck, freshly initialised on top of an ImageNet backbone). Each group carries a
    ``name`` for logs.
    """
    embedding_params = {id(m.weight) for m in sam.modules() if isinstance(m, nn.Embedding)}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in sam.named_parameters():
        if not param.requires_grad:
            continue
        encoder = name.startswith("image_encoder.") and not name.startswith(
            tuple(new_encoder_prefixes)
        )
        decay = not _no_decay(name, param, embedding_params)
        groups.setdefault((encoder, decay), []).append(param)
    out = []
    for (encoder, decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": lr * (encoder_lr_scale if encoder else 1.0),
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{'encoder' if encoder else 'decoder'}/{'decay' if decay else 'no_decay'}",
            }
        )
    return out


class LRSchedule:
    """Multiplier of the base learning rate at a step: linear warm-up x decay.

    The two factors multiply (rather than decay starting after warm-up), so any warm-up length
    works with any total, including a total estimated during the run. ``total_steps`` None =
    not known yet (no decay); ``estimated``: the total comes from a time budget and the loop
    refines it during the first half. Plain attributes: ``LambdaLR.state_dict`` saves them.
    """

    def __init__(
        self,
        *,
        warmup: int,
        total_steps: int | None,
        kind: str = "cosine",
        min_ratio: float = 0.01,
    ) -> None:
        if kind not in ("cosine", "step", "constant"):
            raise ValueError(f"unknown schedule {kind!r}; cosine, step or constant")
        self.warmup = warmup
        self.total_steps = total_steps
        self.kind = kind
        self.min_ratio = min_ratio
        self.estimated = False

    def __call__(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0
        if self.total_steps is None or self.kind == "constant":
            return warm
        progress = min(1.0, step / max(1, self.total_steps))
        if self.kind == "cosine":
            decay = self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        else:
            # The paper's: /10 at 60k and 86.7k of 90k steps.
            decay = 1.0 if progress < 2 / 3 else 0.1 if progress < 0.963 else 0.01
        return warm * decay


# --------------------------------------------------------------------------- the step


class TrainStep(nn.Module):
    """Forward = one training step's loss: encode, simulate the rounds, sum the losses.

    A module (rather than a function) so that DistributedDataParallel can wrap it: DDP
    synchronises gradients only for computations that run through the wrapped forward.
    """

    def __init__(
        self,
        sam: Sam,
        sim: SimulationConfig,
        loss: LossConfig,
        *,
        encoder_frozen: bool,
        bf16: bool,
    ) -> None:
        super().__init__()
        self.sam = sam
        self.sim = sim
        self.loss_cfg = loss
        self.encoder_frozen = encoder_frozen
        self.bf16 = bf16

    def forward(
        self,
        images: torch.Tensor,
        image_index: torch.Tensor,
        masks: torch.Tensor,
        low_res_masks: torch.Tensor,
        seed: int,
        share_offset: int = 0,
        share_total: int = 0,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Arguments: images Bx3xSxS 0-255, image_index M, masks MxSxS bool, low_res_masks
        MxLxL float, seed for the simulation; under DDP, these M instances' rows
        ``share_offset`` .. of the step's ``share_total`` (0: all of them, one process).
        Returns the loss (mean over the M instances) and logging values."""
        share = Share(offset=share_offset, total=share_total) if share_total else None
        generator = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        )
        with autocast:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
                # HQ-SAM's early feature comes with the embedding (None for a plain SAM).
                embeddings, early = self.sam.encode_image_with_early(images)
            rounds = simulate(
                self.sam,
                embeddings,
                image_index,
                masks,
                self.sim,
                generator=generator,
                rng=rng,
                early_features=early,
                share=share,
            )
        terms = interactive_loss(rounds, low_res_masks, self.loss_cfg)
        stats = {
            "focal": terms.focal,
            "dice": terms.dice,
            "iou_mse": terms.iou_mse,
            "iou_first": terms.first_iou,
            "iou_last": terms.last_iou,
        }
        if self.sam.is_hq:
            stats.update(hq_focal=terms.hq_focal, hq_dice=terms.hq_dice)
        return terms.total, stats


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for one step of one rank."""
    state = np.random.SeedSequence([seed, 3, step, rank]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


class _StepBatches(torch.utils.data.Sampler[list[int]]):
    """Endless batches of global sample indices, from ``start_step`` on, for one rank."""

    def __init__(self, *, start_step: int, batch: int, rank: int, world: int) -> None:
        self.start_step, self.batch, self.rank, self.world = start_step, batch, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for s in itertools.count(self.start_step):
            first = (s * self.world + self.rank) * self.batch
            yield list(range(first, first + self.batch))


# --------------------------------------------------------------------------- checkpoints


def rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU and CUDA, NumPy, Python) as checkpoint-safe values."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *map(float, np_state[2:])],
        "python": _plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy(), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(obj: Any) -> Any:
    """Tuples -> lists, recursively (checkpoints hold plain containers)."""
    if isinstance(obj, tuple | list):
        return [_plain(v) for v in obj]
    return obj


def save_training_state(
    path: Path,
    sam: Sam,
    cfg: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    stats: dict[str, Any],
) -> Path:
    """Model, optimiser, scheduler, step, recipe and RNG state, written atomically."""
    return save_checkpoint(
        path,
        sam,
        {"name": cfg.config, "image_size": sam.image_size},
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "recipe": cfg.recipe(),
            "rng": rng_state(),
            "stats": stats,
        },
    )


# --------------------------------------------------------------------------- validation


def validation_instances(
    root: Path, sets: Sequence[str], *, images_per_set: int, max_instances: int
) -> list[Instance]:
    """A small fixed subset of the validation split: the objects of >= 64 px of the first
    ``images_per_set`` val images of each set, taken round-robin over sets up to
    ``max_instances``, then put back in image order (the evaluator embeds each image once)."""
    per_set = [
        list(
            iter_instances(
                load_coco_set(root / name), "val", min_area=64, limit_images=images_per_set
            )
        )
        for name in sets
    ]
    chosen: list[Instance] = []
    for group in itertools.zip_longest(*per_set):
        for inst in group:
            if inst is not None and len(chosen) < max_instances:
                chosen.append(inst)
    rank = {id(inst): i for i, inst in enumerate(itertools.chain(*per_set))}
    return sorted(chosen, key=lambda inst: rank[id(inst)])


def validate(
    sam: Sam,
    instances: Sequence[Instance],
    *,
    device: torch.device,
    max_clicks: int,
    modes: Sequence[str],
) -> dict[str, Any]:
    """The interactive protocol (``model.evaluate``) on ``instances``: mIoU@1/3/5, NoC@85/90
    per output mode ("best" of three at every click, or "single" after the first)."""
    from model.evaluate import evaluate, summarize
    from model.predictor import SamPredictor

    was_training = sam.training
    predictor = SamPredictor(sam, device=device)
    out: dict[str, Any] = {}
    try:
        for mode in modes:
            start = time.perf_counter()
            results = evaluate(
                predictor,
                instances,
                max_clicks=max_clicks,
                mode=mode,  # type: ignore[arg-type]
                # Exact mIoU@1/3/5 and NoC@85/90 without clicking on past 90% IoU.
                stop_iou=0.9,
            )
            by_set: dict[str, list[Any]] = {}
            for r in results:
                by_set.setdefault(r.set_name, []).append(r)
            out[mode] = {
                **_figures(summarize(results, max_clicks)),
                "seconds": time.perf_counter() - start,
                "per_set": {
                    name: _figures(summarize(group, max_clicks)) for name, group in by_set.items()
                },
            }
    finally:
        sam.train(was_training)
    return out


def _figures(m: Any) -> dict[str, float]:
    """The headline numbers of a ``model.evaluate.Metrics``."""
    return {
        "miou@1": m.miou[1],
        "miou@3": m.miou[3],
        "miou@5": m.miou[5],
        "mbiou@1": m.mbiou.get(1, math.nan),
        "mbiou@5": m.mbiou.get(5, math.nan),
        "noc@85": m.noc["85"],
        "noc@90": m.noc["90"],
        "instances": m.n_instances,
    }


# --------------------------------------------------------------------------- the loop


class _Stopper:
    """SIGINT / SIGTERM end the run cleanly after the current step (with a checkpoint)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Stopper:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _resolve_resume(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None, list[str]]:
    """On ``--resume``: the checkpoint and the config with the recipe taken from it.

    Returns (config, checkpoint payload or None, recipe fields whose command-line value was
    overridden by the checkpoint's).
    """
    if cfg.resume is None:
        return cfg, None, []
    payload = read_checkpoint(cfg.resume)
    if "optimizer" not in payload or "recipe" not in payload:
        raise ValueError(
            f"{cfg.resume} is not a training checkpoint (no optimizer state); "
            "use --init to warm-start from model weights"
        )
    recipe = payload["recipe"]
    current = cfg.recipe()
    default = TrainConfig(config="", sets=[]).recipe()
    # Report only options the command line actually set to something else.
    overridden = sorted(
        k for k in recipe if k in current and current[k] not in (recipe[k], default[k])
    )
    resumed = dataclasses.replace(cfg, **{k: recipe[k] for k in current if k in recipe})
    return resumed, payload, overridden


class _JsonlLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


def train(cfg: TrainConfig, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) training; returns the summary (also logged and printed)."""
    ctx = setup_distributed()
    say = echo if ctx.main else (lambda _msg: None)
    cfg, payload, overridden = _resolve_resume(cfg)
    if overridden:
        say(f"resuming: the checkpoint's recipe replaces --{', --'.join(overridden)}")
    if cfg.steps is None and cfg.minutes is None:
        raise ValueError("give --steps or --minutes (or both)")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    log = _JsonlLog(out / LOG_FILE if ctx.main else None)
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)

    # Model and what is trained; the random initialisation is a function of the seed too.
    torch.manual_seed(cfg.seed)
    sam = build_sam(cfg.config)
    if cfg.init is not None and payload is None:
        fresh = load_init_weights(sam, cfg.init)
        if fresh:
            say(
                f"init: {cfg.init} has no HQ-SAM parts; {len(fresh)} tensors under "
                f"{', '.join(p.rstrip('.') for p in HQ_PREFIXES)} start from their initialisation"
            )
    frozen = apply_mode(sam, cfg.mode, freeze_encoder_stages_=cfg.freeze_encoder_stages)
    encoder_frozen = not any(p.requires_grad for p in sam.image_encoder.parameters())
    sam.to(ctx.device).train()
    if encoder_frozen:
        sam.image_encoder.eval()  # no dropout / stochastic depth in a fixed feature extractor

    # Data.
    root = Path(cfg.data) if cfg.data else shared_data_root()
    images = collect_train_images(root, cfg.sets, split="train", holdout=cfg.holdout)
    mean = [float(v) for v in sam.pixel_mean.flatten().tolist()]
    pixel_mean = (mean[0], mean[1], mean[2])
    aug = AugmentConfig(
        image_size=sam.image_size,
        low_res_size=int(sam.prompt_encoder.mask_input_size[0]),
        max_instances=cfg.masks_per_image,
        min_area=cfg.min_area,
        scale_range=(cfg.scale_min, cfg.scale_max),
        pixel_mean=pixel_mean,
    )
    dataset = TrainDataset(images, aug, seed=cfg.seed, set_weighting=cfg.set_weighting)
    val_sets = list(dict.fromkeys(cfg.sets + cfg.holdout))
    val = (
        validation_instances(
            root, val_sets, images_per_set=cfg.val_images, max_instances=cfg.val_instances
        )
        if ctx.main and cfg.val_images > 0
        else []
    )

    # Optimiser and schedule.
    groups = param_groups(
        sam,
        lr=cfg.lr,
        encoder_lr_scale=cfg.encoder_lr_scale,
        weight_decay=cfg.weight_decay,
        new_encoder_prefixes=cfg.new_encoder_prefixes,
    )
    trainable = [p for g in groups for p in g["params"]]
    use_cuda = ctx.device.type == "cuda"
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), fused=use_cuda or None)
    schedule = LRSchedule(
        warmup=cfg.warmup, total_steps=cfg.steps, kind=cfg.schedule, min_ratio=cfg.min_lr_ratio
    )
    schedule.estimated = cfg.steps is None
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    step = 0
    if payload is not None:
        load_state_dict_strict(sam, payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        step = int(payload["step"])
        set_rng_state(payload["rng"])
    start_step = step

    module: nn.Module = TrainStep(
        sam,
        SimulationConfig(
            rounds=cfg.rounds,
            loss_rounds=cfg.loss_rounds,
            box_prob=cfg.box_prob,
            protocol_prob=cfg.protocol_prob,
        ),
        LossConfig(
            single_first=cfg.single_first,
            multimask_later=cfg.multimask_later,
            focal=cfg.focal_weight,
            focal_alpha=cfg.focal_alpha,
            iou=cfg.iou_weight,
            # --mode hq: the base is frozen; only the HQ mask is trained (official recipe).
            sam_outputs=cfg.mode != "hq",
        ),
        encoder_frozen=encoder_frozen,
        bf16=use_cuda,
    )
    if ctx.world > 1:
        module = nn.parallel.DistributedDataParallel(
            module,
            device_ids=[ctx.device.index] if use_cuda else None,
            # Box-corner embeddings sit idle in a step without boxes, and so on.
            find_unused_parameters=True,
        )

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=_StepBatches(
            start_step=step, batch=cfg.batch_images, rank=ctx.rank, world=ctx.world
        ),
        num_workers=cfg.workers,
        collate_fn=collate,
        pin_memory=use_cuda,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(cfg.seed),
    )

    n_params = sum(p.numel() for p in sam.parameters())
    n_train = sum(p.numel() for p in trainable)
    say(
        f"{cfg.config} [mode {cfg.mode}]: {n_params / 1e6:.2f}M parameters "
        f"({n_train / 1e6:.2f}M = {n_train:,} trained, "
        f"{len(frozen)} tensors frozen), input {sam.image_size} px, device {ctx.device}, "
        f"world {ctx.world}; {len(images)} training images from {','.join(cfg.sets)}"
        + (f" (held out: {','.join(cfg.holdout)})" if cfg.holdout else "")
        + f"; {len(val)} validation objects"
    )
    log.write({"event": "start", "step": step, "config": dataclasses.asdict(cfg)})

    def checkpoint(path: Path, stats: dict[str, Any]) -> None:
        save_training_state(
            path, sam, cfg, optimizer=optimizer, scheduler=scheduler, step=step, stats=stats
        )

    def run_validation() -> dict[str, Any] | None:
        if not val:
            return None
        metrics = validate(
            sam, val, device=ctx.device, max_clicks=cfg.val_clicks, modes=cfg.val_modes
        )
        log.write({"event": "val", "step": step, "metrics": metrics})
        say(
            f"val @ step {step}: "
            + "; ".join(
                f"{mode} mIoU@1/3/5 {m['miou@1']:.3f}/{m['miou@3']:.3f}/{m['miou@5']:.3f} "
                f"NoC@85/90 {m['noc@85']:.2f}/{m['noc@90']:.2f}"
                for mode, m in metrics.items()
            )
        )
        if encoder_frozen:
            sam.image_encoder.eval()
        return metrics

    val_history: list[dict[str, Any]] = []
    if cfg.val_at_start and ctx.main:
        metrics = run_validation()
        if metrics:
            val_history.append({"step": step, **metrics})
    _barrier(ctx)

    t_start = time.monotonic()
    deadline = t_start + cfg.minutes * 60 if cfg.minutes is not None else math.inf
    step_times: list[float] = []
    losses: list[float] = []
    window: dict[str, list[float]] = {}
    n_images = n_masks = 0
    train_seconds = 0.0
    t_ref = math.nan  # wall clock after the first few steps of this run (they are slower)
    reason = "steps"
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        disable=not (cfg.progress and ctx.main),
        unit="step",
        dynamic_ncols=True,
    )
    with _Stopper() as stopper:
        batches = iter(loader)
        while True:
            if cfg.steps is not None and step >= cfg.steps:
                break
            if cfg.stop_after is not None and step - start_step >= cfg.stop_after:
                reason = "stop_after"
                break
            t0 = time.monotonic()
            batch = next(batches).to(ctx.device)
            # Stochastic depth etc.: a function of the step (and rank: other samples' draws).
            torch.manual_seed(step_seed(cfg.seed, step, ctx.rank))
            # The prompts: seeded alike on every rank, each rank keeping its rows (the module
            # docstring); rank 0's seed is the one a single process has always used.
            counts = _counts_over_ranks(batch.num_masks, ctx)
            offset, total = sum(counts[: ctx.rank]), sum(counts)
            loss, stats = module(
                batch.images,
                batch.image_index,
                batch.masks,
                batch.low_res_masks,
                step_seed(cfg.seed, step, 0),
                offset if ctx.world > 1 else 0,
                total if ctx.world > 1 else 0,
            )
            optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients over ranks; weighting each rank's mean by its share of
            # the instances makes that average the gradient of the mean over all of them.
            weight = batch.num_masks * ctx.world / total if ctx.world > 1 else 1.0
            (loss * weight).backward()
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(trainable, cfg.clip if cfg.clip > 0 else math.inf)
            )
            optimizer.step()
            scheduler.step()
            step += 1
            dt = time.monotonic() - t0
            train_seconds += dt
            step_times.append(dt)
            n_images += batch.num_images * ctx.world
            n_masks += batch.num_masks  # this rank's; summed over ranks at the end
            loss_value = float(loss.detach())
            losses.append(loss_value)
            for key, value in {"loss": loss_value, "grad_norm": grad_norm, **stats}.items():
                window.setdefault(key, []).append(value)

            recent = step_times[-20:]
            sec_per_step = sum(recent) / len(recent)
            imgs_per_s = cfg.batch_images * ctx.world / sec_per_step
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss_value:.3f}", iou=f"{stats['iou_last']:.2f}", img_s=f"{imgs_per_s:.2f}"
            )

            # With only a time budget, the schedule's length is what fits in it: estimated from
            # the wall clock per step (validation and checkpoints included) every 10 steps,
            # until half of it has passed; every rank takes rank 0's figure.
            done = step - start_step
            if done == 3:
                t_ref = time.monotonic()
            if (
                schedule.estimated
                and math.isfinite(deadline)
                and done >= 10
                and done % 10 == 0
                and (schedule.total_steps is None or step < schedule.total_steps / 2)
            ):
                rate = (time.monotonic() - t_ref) / (done - 3)
                left = (deadline - time.monotonic()) / rate
                first = schedule.total_steps is None
                schedule.total_steps = int(_broadcast_float(step + max(left, 1.0), ctx))
                if first:
                    say(f"schedule: ~{schedule.total_steps} steps fit in --minutes {cfg.minutes}")

            if ctx.main and step % cfg.log_every == 0:
                record = {k: float(np.mean(v)) for k, v in window.items()}
                window.clear()
                log.write(
                    {
                        "event": "train",
                        "step": step,
                        "lr": max(scheduler.get_last_lr()),
                        "images_per_s": imgs_per_s,
                        "masks_per_s": n_masks * ctx.world / max(train_seconds, 1e-9),
                        **record,
                    }
                )
            if ctx.main and cfg.ckpt_every and step % cfg.ckpt_every == 0:
                checkpoint(out / LAST_CHECKPOINT, {"loss": loss_value})
            if ctx.main and cfg.keep_every and step % cfg.keep_every == 0:
                checkpoint(out / f"step_{step:07d}.pt", {"loss": loss_value})
            if cfg.val_every and step % cfg.val_every == 0:
                if ctx.main:
                    metrics = run_validation()
                    if metrics:
                        val_history.append({"step": step, **metrics})
                _barrier(ctx)

            # Rank 0 decides, so that every rank stops after the same step.
            stop = 2.0 if stopper.requested else 0.0
            if not stop and time.monotonic() + sec_per_step > deadline:
                stop = 1.0
            stop = _broadcast_float(stop, ctx)
            if stop:
                reason = "signal" if stop == 2.0 else "minutes"
                break
        del batches
    bar.close()

    n_masks = int(_sum_over_ranks(float(n_masks), ctx))
    summary: dict[str, Any] = {
        "config": cfg.config,
        "steps": step,
        "steps_this_run": step - start_step,
        "stopped_by": reason,
        "train_minutes": train_seconds / 60,
        "images": n_images,
        "masks": n_masks,
        "images_per_s": n_images / max(train_seconds, 1e-9),
        "masks_per_s": n_masks / max(train_seconds, 1e-9),
        "mask_predictions_per_s": n_masks * cfg.rounds / max(train_seconds, 1e-9),
        "loss_start": float(np.mean(losses[:10])) if losses else math.nan,
        "loss_end": float(np.mean(losses[-10:])) if losses else math.nan,
    }
    if ctx.main:
        checkpoint(out / LAST_CHECKPOINT, {"loss": summary["loss_end"]})
        save_checkpoint(
            out / MODEL_FILE,
            sam,
            {"name": cfg.config, "image_size": sam.image_size},
            {"step": step},
            half=True,
        )
        final = run_validation() if step > start_step or not val_history else None
        if final:
            val_history.append({"step": step, **final})
        summary["validation"] = val_history
        summary["checkpoint"] = str(out / LAST_CHECKPOINT)
        log.write({"event": "end", **summary})
        say(format_summary(summary))
    _barrier(ctx)
    if ctx.joined:
        # Leave the group cleanly (NCCL warns otherwise), and so that a later train() in
        # this process can join a new one.
        dist.destroy_process_group()
    return summary


def _counts_over_ranks(count: int, ctx: Dist) -> list[int]:
    """Every rank's ``count``, in rank order (``[count]`` on one process)."""
    if ctx.world == 1:
        return [count]
    t = torch.zeros(ctx.world, dtype=torch.int64, device=ctx.device)
    t[ctx.rank] = count
    dist.all_reduce(t)
    return [int(v) for v in t.tolist()]


def _sum_over_ranks(value: float, ctx: Dist) -> float:
    if ctx.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t.item())


def _barrier(ctx: Dist) -> None:
    if ctx.world > 1:
        dist.barrier()


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [
        f"{summary['config']}: {summary['steps_this_run']} steps this run "
        f"(step {summary['steps']}, stopped by {summary['stopped_by']}), "
        f"{summary['train_minutes']:.1f} min training",
        f"  {summary['images']} images, {summary['masks']} masks: "
        f"{summary['images_per_s']:.2f} images/s, {summary['masks_per_s']:.1f} masks/s, "
        f"{summary['mask_predictions_per_s']:.1f} mask predictions/s",
        f"  loss {summary['loss_start']:.4f} (first 10 steps) -> "
        f"{summary['loss_end']:.4f} (last 10)",
    ]
    for entry in summary.get("validation", []):
        for mode, m in entry.items():
            if mode == "step":
                continue
            lines.append(
                f"  val @ {entry['step']} [{mode}]: mIoU@1/3/5 {m['miou@1']:.3f}/"
                f"{m['miou@3']:.3f}/{m['miou@5']:.3f}, NoC@85/90 {m['noc@85']:.2f}/"
                f"{m['noc@90']:.2f} ({m['instances']} objects)"
            )
    if "checkpoint" in summary:
        lines.append(f"  checkpoint: {summary['checkpoint']}")
    return "\n".join(lines)

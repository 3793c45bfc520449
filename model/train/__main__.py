"""Command line: ``python -m model.train --config NAME --sets a,b --minutes 30 --out runs/NAME``.

Examples::

    # 30 minutes on the CPU, two sets held out for an honest generalisation figure
    nice -n 19 python -m model.train --config efficientnet_lite0_512 \\
        --sets coco128-seg,davis345,fruits-nuts,pennfudan170,ccp1003,camvid347,weizmann-horse326 \\
        --holdout davis345,weizmann-horse326 --minutes 30 --out runs/lite0

    # continue a killed run exactly (the recipe comes from the checkpoint)
    python -m model.train --resume runs/lite0/last.pt --minutes 30

    # several GPUs, no code change
    torchrun --nproc-per-node 4 -m model.train --config ... --sets ... --steps 20000

    # warm-start from the shipped model (weights only; new optimiser and schedule)
    python -m model.train --config efficientnet_lite0_512 --init shipped.pt --sets ... --minutes 60

    # HQ-SAM on the shipped model: base frozen, only the HQ token, its MLP and the fusion
    # convolutions trained (the HQ parts, absent from shipped.pt, start fresh)
    python -m model.train --config efficientnet_lite0_512_hq --init shipped.pt --mode hq ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from model.build import available
from model.train.augment import SET_WEIGHTINGS
from model.train.loop import MODES, TrainConfig, train


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig(config="", sets=[])  # the defaults
    p = argparse.ArgumentParser(
        prog="python -m model.train",
        description="Train SAM with the paper's interactive recipe (appendix A).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = p.add_argument_group("run")
    run.add_argument("--config", help=f"model configuration: {', '.join(available())}")
    run.add_argument("--sets", type=_csv, help="comma-separated set folders under the data root")
    run.add_argument("--holdout", type=_csv, default=[], help="sets dropped from training")
    run.add_argument("--data", default=None, help="data root (default: ../shared/data)")
    run.add_argument("--out", default=None, help="output folder (default: runs/CONFIG)")
    run.add_argument("--minutes", type=float, default=None, help="time budget")
    run.add_argument("--steps", type=int, default=None, help="total steps (schedule length)")
    run.add_argument("--resume", default=None, help="continue a run from its checkpoint")
    run.add_argument(
        "--init",
        default=None,
        help="warm-start weights from a checkpoint (a plain SAM one may start an _hq config: "
        "its HQ parts then start fresh)",
    )
    run.add_argument(
        "--mode",
        choices=MODES,
        default=d.mode,
        help="full: everything (but --freeze-encoder-stages); decoder: image encoder frozen; "
        "hq: HQ-SAM configs, only the HQ token, its MLP and the fusion block trained",
    )
    run.add_argument("--seed", type=int, default=d.seed)
    run.add_argument(
        "--stop-after", type=int, default=None, help="stop after N steps of this run (chunks)"
    )
    run.add_argument(
        "--threads", type=int, default=d.threads, help="torch CPU threads; 0 = default"
    )
    run.add_argument("--workers", type=int, default=d.workers, help="data-loader processes")
    run.add_argument("--ckpt-every", type=int, default=d.ckpt_every, help="steps")
    run.add_argument("--keep-every", type=int, default=d.keep_every, help="steps; 0 = never")
    run.add_argument("--log-every", type=int, default=d.log_every, help="steps")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    data = p.add_argument_group("data and prompts")
    data.add_argument("--batch-images", type=int, default=d.batch_images)
    data.add_argument("--masks-per-image", type=int, default=d.masks_per_image)
    data.add_argument("--rounds", type=int, default=d.rounds, help="prompt rounds per step")
    data.add_argument(
        "--loss-rounds",
        type=int,
        default=d.loss_rounds,
        help="rounds back-propagated (first, last, random others); 0 = all",
    )
    data.add_argument(
        "--set-weighting",
        choices=SET_WEIGHTINGS,
        default=d.set_weighting,
        help="each image equally often, or sets weighted by the square root of their size, or "
        "equally",
    )
    data.add_argument("--min-area", type=int, default=d.min_area, help="px at the input size")
    data.add_argument("--scale-min", type=float, default=d.scale_min)
    data.add_argument("--scale-max", type=float, default=d.scale_max)
    data.add_argument("--box-prob", type=float, default=d.box_prob)
    data.add_argument(
        "--protocol-prob",
        type=float,
        default=d.protocol_prob,
        help="share of corrective clicks placed as the protocol / annotators place them",
    )

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--lr", type=float, default=d.lr)
    opt.add_argument("--encoder-lr-scale", type=float, default=d.encoder_lr_scale)
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay)
    opt.add_argument("--warmup", type=int, default=d.warmup, help="steps")
    opt.add_argument("--schedule", choices=("cosine", "step", "constant"), default=d.schedule)
    opt.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio)
    opt.add_argument("--clip", type=float, default=d.clip, help="gradient norm; 0 = off")
    opt.add_argument(
        "--freeze-encoder-stages",
        type=int,
        default=d.freeze_encoder_stages,
        help="freeze the encoder's first N stages; -1 = the whole encoder",
    )
    opt.add_argument("--single-first", type=float, default=d.single_first)
    opt.add_argument("--multimask-later", type=float, default=d.multimask_later)
    opt.add_argument("--focal-weight", type=float, default=d.focal_weight, help="dice's is 1")
    opt.add_argument(
        "--focal-alpha",
        type=float,
        default=d.focal_alpha,
        help="foreground weight of the focal loss (background: 1 - alpha); < 0 = unweighted",
    )

    opt.add_argument(
        "--iou-weight",
        type=float,
        default=d.iou_weight,
        help="weight of the IoU head's loss (it picks the shown mask of three)",
    )

    val = p.add_argument_group("validation (the interactive protocol)")
    val.add_argument("--val-every", type=int, default=d.val_every, help="steps; 0 = at the end")
    val.add_argument("--val-at-start", action="store_true")
    val.add_argument("--val-images", type=int, default=d.val_images, help="per set; 0 = none")
    val.add_argument("--val-instances", type=int, default=d.val_instances)
    val.add_argument("--val-clicks", type=int, default=d.val_clicks)
    val.add_argument("--val-modes", type=_csv, default=d.val_modes, help="best,single")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Validate the options and turn them into a ``TrainConfig``."""
    if args.resume is None and (not args.config or not args.sets):
        raise SystemExit("--config and --sets are required (unless --resume)")
    unknown = set(args.val_modes) - {"best", "single"}
    if unknown:
        raise SystemExit(f"--val-modes: unknown {sorted(unknown)}; use best and/or single")
    out = args.out
    if out is None:
        out = str(Path(args.resume).parent) if args.resume else f"runs/{args.config}"
    values = {k: v for k, v in vars(args).items() if k != "no_progress"}
    values.update(
        config=args.config or "", sets=args.sets or [], out=out, progress=not args.no_progress
    )
    return TrainConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    train(config_from_args(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Retraining cycles: what makes the platform a data engine (SA paper, section 4).

A cycle, one Celery job on the ``gpu`` queue:

1. **Snapshot** the project's accepted masks (people's, imported, and model masks a reviewer
   accepted or fixed) as a COCO set with a train / validation split that is stable per image
   (an image's side is a function of its sha256, so it never moves between cycles).
2. **Train** with model/'s recipe, warm-started from the promoted version (DECISIONS 2), in
   chunks of steps: each chunk ends with a checkpoint, a progress report (step, loss, ETA)
   and a cancellation check. On a worker with several GPUs (or ``MASKLOOP_TRAIN_PROCESSES``
   > 1) each chunk runs under torchrun, one DistributedDataParallel process per GPU (gloo
   processes on a CPU), instead of in the worker's process.
3. **Evaluate** the candidate and the promoted version (GrabCut when none) on the same
   validation objects with the interactive protocol.
4. **Gate**: the candidate becomes a new model version, promoted only when it beats the
   promoted one on the project's metric beyond the noise (paired bootstrap over validation
   images, 95% interval excluding zero: DECISIONS 7); otherwise it is kept as rejected, with
   its figures. After a promotion, embeddings are recomputed and, where the project has
   automatic masks, they are regenerated with the new version (the old ones stay traceable).

Crashes. A worker killed mid-training leaves its job running; the next launch takes the job
over once it is stale (engine.jobs) and *adopts its work folder*: same snapshot, training
resumed from the last checkpoint, still exactly one candidate. After ``MAX_ATTEMPTS`` such
attempts the cycle ends failed with its reason instead of looping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from annotator.models import Image, Job, Mask, MaskSource, ModelVersion, Project
from engine import embeddings, jobs, versions
from engine.errors import EngineError, InvalidInput

KIND = "retrain"
STARTER_CONFIG = "efficientnet_lite0_512"
MAX_ATTEMPTS = 3
SET_NAME = "project"
CANDIDATE_FILE = "candidate.json"

#: A cycle's parameters; a project overrides them in ``settings["retraining"]``, a launch in
#: its request body.
DEFAULTS: dict[str, Any] = {
    "config": "",  # default: the promoted version's configuration
    # full: everything; decoder: the image encoder frozen (embeddings could be kept);
    # hq: HQ-SAM's head alone on the frozen promoted model (its _hq configuration).
    "mode": "full",
    "steps": 300,
    "chunk_steps": 25,
    "batch_images": 2,
    "masks_per_image": 8,
    "rounds": 11,
    "loss_rounds": 4,
    "lr": 2e-4,
    "val_fraction": 0.2,
    "val_images": 40,  # validation images evaluated (the first by id)
    "max_clicks": 20,
    "metric": "noc@85",  # noc@85, noc@90 (lower is better) or miou@1, miou@3, miou@5
    "seed": 0,
}
METRICS = ("noc@85", "noc@90", "miou@1", "miou@3", "miou@5")
MODES = ("full", "decoder", "hq")


def cycle_params(project: Project, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then the project's settings, then the launch's; checked (400 on a bad one)."""
    own = {k: v for k, v in (project.settings.get("retraining") or {}).items() if k != "schedule"}
    params = {**DEFAULTS, **own, **(overrides or {})}
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise InvalidInput(f"unknown retraining parameters {unknown}; known: {sorted(DEFAULTS)}")
    if params["metric"] not in METRICS:
        raise InvalidInput(f"metric must be one of {list(METRICS)}", field="metric")
    if params["mode"] not in MODES:
        raise InvalidInput(f"mode must be one of {list(MODES)}", field="mode")
    if params["mode"] != "full" and _base_version(project) is None:
        raise InvalidInput(
            f"mode {params['mode']} trains parts of a model: promote a version first "
            "(with GrabCut answering, only mode full can start one)",
            field="mode",
        )
    for name in ("steps", "chunk_steps", "batch_images", "masks_per_image", "rounds"):
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{name} must be a whole number >= 1", field=name)
    if not 0 < float(params["val_fraction"]) < 1:
        raise InvalidInput("val_fraction must be between 0 and 1", field="val_fraction")
    if params["config"]:
        from model.build import available

        if params["config"] not in available():
            raise InvalidInput(f"unknown configuration {params['config']!r}", field="config")
    if params["mode"] == "hq" and params["config"] and not params["config"].endswith("_hq"):
        raise InvalidInput("mode hq needs an HQ configuration (NAME_hq)", field="config")
    return params


def training_config(params: dict[str, Any], base: ModelVersion | None) -> str:
    """The configuration a cycle trains: the one asked for, else the promoted version's (its
    HQ twin in mode hq), else the starter's."""
    name = params["config"] or (base.config.get("name") if base else "") or STARTER_CONFIG
    if params.get("mode") == "hq" and not name.endswith("_hq"):
        name += "_hq"
    return str(name)


def due(project: Project, now: Any = None) -> str | None:
    """Why the project's schedule wants a cycle now, or None.

    ``settings["retraining"]["schedule"]``: ``{"every_accepted": N}`` (N masks accepted since
    the last cycle started) and/or ``{"every_hours": H}`` (H hours since it started, and at
    least one mask accepted since). The first cycle counts from the project's creation.
    """
    schedule = (project.settings.get("retraining") or {}).get("schedule") or {}
    if not schedule:
        return None
    now = now or timezone.now()
    last = project.jobs.filter(kind=KIND).order_by("-created_at").first()
    since = last.created_at if last is not None else project.created_at
    fresh = accepted_masks(project).filter(updated_at__gt=since).count()
    every = schedule.get("every_accepted")
    if every and fresh >= int(every):
        return f"{fresh} masks accepted since the last cycle (every {every})"
    hours = schedule.get("every_hours")
    if hours and fresh and now - since >= timedelta(hours=float(hours)):
        return f"{float(hours):g} hours since the last cycle, {fresh} new masks"
    return None


def run_schedule() -> list[int]:
    """Launch the cycles that are due (the beat task); returns the new jobs' ids."""
    started = []
    for project in Project.objects.filter(settings__has_key="retraining"):
        reason = due(project)
        if reason is None:
            continue
        if project.jobs.filter(kind=KIND, state__in=Job.ACTIVE_STATES).exists():
            continue
        try:
            job = enqueue(project)
        except EngineError:  # a bad saved setting: the admin sees it when launching by hand
            continue
        Job.objects.filter(pk=job.pk).update(message=f"scheduled: {reason}")
        started.append(job.pk)
    return started


def enqueue(project: Project, *, overrides: dict[str, Any] | None = None, user: Any = None) -> Job:
    """Launch a cycle (409 with the running job's id while one is active)."""
    params = cycle_params(project, overrides)
    return jobs.enqueue(project, KIND, key="cycle", params=params, user=user)


# --------------------------------------------------------------------------- the snapshot


def is_validation(sha256: str, fraction: float) -> bool:
    """An image's side of the split, fixed for ever by its content."""
    return int(sha256[:8], 16) / 0xFFFFFFFF < fraction


def accepted_masks(project: Project) -> Any:
    """Masks a cycle learns from: everything people made or imported (unless rejected),
    and model-made masks a reviewer accepted or fixed. Crowd regions are not objects."""
    people = Mask.objects.filter(
        image__project=project,
        source_stage__in=[MaskSource.ASSISTED, MaskSource.SEMI, MaskSource.IMPORTED],
    ).exclude(review_state=Mask.ReviewState.REJECTED)
    reviewed = Mask.objects.filter(
        image__project=project,
        source_stage=MaskSource.AUTOMATIC,
        review_state__in=[Mask.ReviewState.ACCEPTED, Mask.ReviewState.FIXED],
    )
    return (people | reviewed).filter(is_crowd=False)


def write_snapshot(project: Project, folder: Path, val_fraction: float) -> dict[str, int]:
    """``folder/project/annotations.json`` (+ the image files) and ``folder/splits.json``.

    At least one image lands on each side when there are two or more, so that a small
    project can run a cycle at all.
    """
    target = folder / SET_NAME
    (target / "images").mkdir(parents=True, exist_ok=True)
    masks = accepted_masks(project)
    image_ids = sorted(set(masks.values_list("image_id", flat=True)))
    images = list(Image.objects.filter(pk__in=image_ids).order_by("pk"))
    if len(images) < 2:
        raise InvalidInput(
            f"a cycle needs accepted masks on at least 2 images; this project has {len(images)}"
        )
    val = {im.pk for im in images if is_validation(im.sha256, val_fraction)}
    by_hash = sorted(images, key=lambda im: im.sha256)
    if not val:
        val = {by_hash[0].pk}
    if len(val) == len(images):
        val.discard(by_hash[-1].pk)
    rows = []
    for image in images:
        name = f"images/{image.pk}{Path(image.file.name or '').suffix}"
        with image.file.open("rb") as source, (target / name).open("wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
        rows.append(
            {"id": image.pk, "file_name": name, "width": image.width, "height": image.height}
        )
    annotations = [
        {
            "id": m["id"],
            "image_id": m["image_id"],
            "category_id": 1,
            "segmentation": {
                "size": [m["image__height"], m["image__width"]],
                "counts": m["rle_counts"],
            },
            "area": m["area"],
            "bbox": m["bbox"],
            "iscrowd": 0,
        }
        for m in masks.order_by("image_id", "id").values(
            "id", "image_id", "rle_counts", "area", "bbox", "image__height", "image__width"
        )
    ]
    data = {
        "images": rows,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object"}],
    }
    (target / "annotations.json").write_text(json.dumps(data), encoding="utf-8")
    (folder / "splits.json").write_text(json.dumps({SET_NAME: {"val": sorted(val)}}))
    return {
        "images": len(images),
        "train_images": len(images) - len(val),
        "val_images": len(val),
        "masks": len(annotations),
    }


# --------------------------------------------------------------------------- the cycle


def _work_root() -> Path:
    return Path(settings.MASKLOOP_TRAINING_DIR)


def _adopt_or_create(job: Job) -> Path:
    """The job's work folder: a lost cycle's of this project when one can be continued."""
    lost = (
        Job.objects.filter(
            project=job.project,
            kind=KIND,
            state=Job.State.FAILED,
            message__startswith="worker lost",
            pk__lt=job.pk,
        )
        .order_by("-pk")
        .first()
    )
    if lost is not None:
        folder = Path(lost.result.get("work") or _work_root() / f"job{lost.pk}")
        if folder.is_dir() and not (folder / CANDIDATE_FILE).exists():
            return folder
    folder = _work_root() / f"job{job.pk}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _base_version(project: Project) -> ModelVersion | None:
    version = project.promoted_version()
    return version if version is not None and version.checkpoint else None


@jobs.runner(KIND)
def _run_cycle(context: jobs.JobContext) -> dict[str, Any]:
    job = context.job
    params = job.params
    work = _adopt_or_create(job)
    state_file = work / "cycle.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
    state["attempts"] = int(state.get("attempts", 0)) + 1
    state_file.write_text(json.dumps(state))
    Job.objects.filter(pk=job.pk).update(result={"work": str(work)})
    if state["attempts"] > MAX_ATTEMPTS:
        raise RuntimeError(
            f"the cycle was interrupted {MAX_ATTEMPTS} times (see {work}); giving up"
        )
    project = job.project

    if "snapshot" not in state:
        context.progress(0.0, "snapshot of the accepted masks")
        state["snapshot"] = write_snapshot(project, work / "data", float(params["val_fraction"]))
        base = _base_version(project)
        state["base"] = base.pk if base is not None else None
        state_file.write_text(json.dumps(state))
    base = ModelVersion.objects.filter(pk=state["base"]).first() if state["base"] else None

    checkpoint = _train(context, work, params, base)
    if context.cancelled():
        return {"cancelled_at": "training", "work": str(work), **state}
    context.progress(0.9, "evaluating the candidate and the promoted version")
    figures = _evaluate(work, params, checkpoint, base)
    version = _register(project, job, work, checkpoint, base, params, figures, state)
    from engine import verifiers  # the learned verifier's turn, once enough new verdicts

    verifier_job = verifiers.train_if_due(project, user=job.created_by)
    return {
        "work": str(work),
        "attempts": state["attempts"],
        "snapshot": state["snapshot"],
        "candidate": version.number,
        "promoted": version.state == ModelVersion.State.PROMOTED,
        "figures": figures,
        "verifier_job": verifier_job.pk if verifier_job is not None else None,
    }


def _train(
    context: jobs.JobContext, work: Path, params: dict[str, Any], base: ModelVersion | None
) -> Path:
    """Train in chunks (checkpoint, progress, cancellation between them); the fp16 weights."""
    from model.train.loop import LAST_CHECKPOINT, MODEL_FILE, TrainConfig, train

    out = work / "train"
    steps = int(params["steps"])
    processes = train_processes()
    started = time.monotonic()
    done_before: int | None = None
    while True:
        last = out / LAST_CHECKPOINT
        if last.exists():
            cfg = TrainConfig(
                config="", sets=[], resume=str(last), out=str(out), stop_after=params["chunk_steps"]
            )
        else:
            init = _local_checkpoint(base, work) if base is not None else None
            cfg = TrainConfig(
                config=training_config(params, base),
                mode=params.get("mode", "full"),  # cycles queued before modes: full
                sets=[SET_NAME],
                data=str(work / "data"),
                init=str(init) if init else None,
                seed=int(params["seed"]),
                batch_images=int(params["batch_images"]),
                masks_per_image=int(params["masks_per_image"]),
                rounds=int(params["rounds"]),
                loss_rounds=int(params["loss_rounds"]),
                lr=float(params["lr"]),
                warmup=max(1, min(100, steps // 10)),
                out=str(out),
                stop_after=params["chunk_steps"],
            )
        cfg.steps = steps
        cfg.threads = int(settings.MASKLOOP_TORCH_THREADS)
        cfg.val_images = 0
        cfg.progress = False
        if processes > 1:
            summary = train_distributed(cfg, processes, log=work / "torchrun.log")
        else:
            summary = train(cfg, echo=lambda _message: None)
        step = int(summary["steps"])
        if done_before is None:
            done_before = step - int(summary["steps_this_run"])
        rate = (time.monotonic() - started) / max(step - done_before, 1)
        eta = rate * (steps - step)
        on = f" on {processes} processes" if processes > 1 else ""
        context.progress(
            0.85 * step / steps,
            f"step {step}/{steps}{on}, loss {summary['loss_end']:.3f}, ETA {_duration(eta)}",
        )
        if step >= steps or context.cancelled():
            return out / MODEL_FILE
        if summary.get("stopped_by") == "signal" or _worker_stopping():
            if (
                summary.get("stopped_by") == "signal"
                and processes == 1
                and multiprocessing.current_process().name == "MainProcess"
            ):
                # The training loop took the worker's SIGTERM (or SIGINT) to end this chunk at
                # a checkpoint, so Celery never saw it: hand it on, and its warm shutdown
                # ends the worker once this task returns. (A prefork pool process is not
                # the worker: its parent decides when it stops.)
                signal.raise_signal(signal.SIGTERM)
            # Told to stop: end the cycle at this checkpoint rather than train on for what
            # may be hours past any stop timeout. The message marks it as a lost worker's,
            # whose folder the next launch adopts (the same snapshot, training resumed).
            raise RuntimeError(
                f"worker lost: it was told to stop at step {step}/{steps}; launching the "
                "cycle again resumes from that checkpoint"
            )


def _worker_stopping() -> bool:
    """Whether this Celery worker began a warm shutdown (SIGTERM) while the task ran."""
    from celery.worker import state

    return state.should_stop is not None and state.should_stop is not False


def train_processes() -> int:
    """Training processes per cycle: ``MASKLOOP_TRAIN_PROCESSES`` when set (> 0), else one
    per GPU this worker sees (1 without a GPU: in the worker's own process)."""
    configured = settings.MASKLOOP_TRAIN_PROCESSES
    if configured > 0:
        return configured
    import torch

    return max(1, torch.cuda.device_count())


def train_distributed(cfg: Any, processes: int, *, log: Path) -> dict[str, Any]:
    """One chunk of training under torchrun: ``processes`` DistributedDataParallel ranks
    (NCCL on GPUs, gloo on CPUs), each taking ``cfg.batch_images`` images per step (the global
    batch is ``processes`` x that); rank 0 writes the checkpoint and the log. Returns the
    chunk's summary as rank 0 logged it. Raises with the log's tail when training fails."""
    import torch

    from model.train.loop import LOG_FILE

    if not torch.cuda.is_available():
        # CPU ranks share the cores the worker was given, rather than each taking them all.
        cfg = dataclasses.replace(cfg, threads=max(1, cfg.threads // processes))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a rendezvous of its own on a free local port
        "--nproc-per-node",
        str(processes),
        "-m",
        "model.train",
        *train_command_line(cfg),
    ]
    env = dict(os.environ)
    root = str(Path(settings.BASE_DIR))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", str(max(1, cfg.threads)))
    out = Path(cfg.out)
    ends_before = len(_log_events(out / LOG_FILE, "end"))
    with log.open("ab") as sink:
        sink.write(f"$ {' '.join(command)}\n".encode())
        sink.flush()
        done = subprocess.run(
            command,
            cwd=root,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            check=False,
            # A worker killed mid-chunk takes its training with it (torchrun then stops its
            # ranks): the cycle's next attempt resumes from the checkpoint, never beside a
            # run still writing into the same folder.
            preexec_fn=_die_with_parent(),
        )
    ends = _log_events(out / LOG_FILE, "end")
    stopped = len(ends) > ends_before and ends[-1].get("stopped_by") == "signal"
    if stopped:
        # A stop signal reached the ranks (torchrun, told to stop, passes it on, then exits
        # non-zero): they ended at a checkpoint, which is all the caller needs.
        return ends[-1]
    if done.returncode != 0 or len(ends) <= ends_before:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"distributed training ({processes} processes) failed with exit code "
            f"{done.returncode}; the end of {log}:\n{tail}"
        )
    return ends[-1]


def train_command_line(cfg: Any) -> list[str]:
    """``python -m model.train`` options for a ``TrainConfig``: every field that differs from
    the default, through the command line's own parser (a field it lacks is an error here, not
    a silently different run)."""
    from model.train.__main__ import build_parser
    from model.train.loop import TrainConfig

    options = {a.dest: a for a in build_parser()._actions if a.option_strings}
    default = TrainConfig(config="", sets=[])
    argv: list[str] = []
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        if value == getattr(default, f.name):
            continue
        if f.name == "progress":
            argv.append("--no-progress")
            continue
        action = options.get(f.name)
        if action is None:
            raise ValueError(f"training option {f.name} has no command-line form")
        flag = max(action.option_strings, key=len)
        if isinstance(value, bool):
            if value:
                argv.append(flag)
            continue
        argv += [flag, ",".join(value) if isinstance(value, list) else str(value)]
    return argv


def _log_events(path: Path, event: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [r for r in records if r.get("event") == event]


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child sent SIGTERM when the worker dies (Linux's
    PR_SET_PDEATHSIG); None elsewhere. The C library is loaded here, in the parent: the
    forked child only makes the call (no loading, no locks, between fork and exec)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return arm


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _local_checkpoint(version: ModelVersion, work: Path) -> Path:
    """The version's checkpoint as a file in the cycle's folder: training reads paths, and the
    storage may be S3 (copied once per cycle; a resumed cycle finds it there)."""
    path = work / f"base-v{version.number}.pth"
    if not path.exists():
        partial = path.with_suffix(".part")
        with version.checkpoint.open("rb") as source, partial.open("wb") as target:
            shutil.copyfileobj(source, target)
        partial.replace(path)
    return path


def _evaluate(
    work: Path, params: dict[str, Any], checkpoint: Path, base: ModelVersion | None
) -> dict[str, Any]:
    """Both predictors on the same validation objects; the paired comparison on the metric."""
    from model.build import build_sam
    from model.evaluate import evaluate, paired_bootstrap, paired_per_image, summarize
    from model.grabcut import GrabCutPredictor
    from model.predictor import SamPredictor
    from model.train.data import iter_instances, load_coco_set

    coco = load_coco_set(work / "data" / SET_NAME)
    limit = int(params["val_images"])
    max_clicks = int(params["max_clicks"])

    def run(predictor: Any) -> Any:
        instances = list(iter_instances(coco, "val", limit_images=limit))
        return summarize(evaluate(predictor, instances, max_clicks=max_clicks), max_clicks)

    def load(path: Path) -> Any:
        from model.checkpoints import read_checkpoint

        name = read_checkpoint(path).get("config", {}).get("name", "")
        return SamPredictor(build_sam(name, checkpoint=path))

    candidate = run(load(checkpoint))
    baseline = run(load(_local_checkpoint(base, work)) if base is not None else GrabCutPredictor())
    metric = params["metric"]
    a, b = paired_per_image(candidate, baseline, metric)
    lower_is_better = metric.startswith("noc")
    gain, lo, hi = paired_bootstrap(b, a) if lower_is_better else paired_bootstrap(a, b)

    def table(m: Any) -> dict[str, float]:
        return {
            **{f"miou@{k}": round(v, 4) for k, v in m.miou.items() if math.isfinite(v)},
            **{f"noc@{k}": round(v, 3) for k, v in m.noc.items()},
            "objects": m.n_instances,
            "images": m.n_images,
        }

    return {
        "metric": metric,
        "candidate": table(candidate),
        "baseline": table(baseline),
        "baseline_name": f"v{base.number}" if base is not None else "grabcut",
        "gain": round(gain, 4),
        "interval": [round(lo, 4), round(hi, 4)],
        "better": lo > 0,
    }


def _register(
    project: Project,
    job: Job,
    work: Path,
    checkpoint: Path,
    base: ModelVersion | None,
    params: dict[str, Any],
    figures: dict[str, Any],
    state: dict[str, Any],
) -> ModelVersion:
    """Exactly one candidate per cycle, promoted or rejected by the gate."""
    marker = work / CANDIDATE_FILE
    if marker.exists():  # registered before a crash: do not make a second one
        return ModelVersion.objects.get(pk=json.loads(marker.read_text())["version"])
    version = versions.add_checkpoint(project, checkpoint, notes=f"retraining cycle, job {job.pk}")
    version.parent = base
    version.metrics = {
        "cycle": figures,
        "snapshot": state["snapshot"],
        "params": params,
        "mode": params.get("mode", "full"),
    }
    version.save(update_fields=["parent", "metrics"])
    marker.write_text(
        json.dumps(
            {
                "version": version.pk,
                "checkpoint": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
            }
        )
    )
    if figures["better"]:
        versions.promote(version)
        _regenerate(project, version, job)
    else:
        versions.reject(version)
    version.refresh_from_db()
    return version


def _regenerate(project: Project, version: ModelVersion, job: Job) -> None:
    """After a promotion: the new version's embeddings and, where the project has automatic
    masks, its automatic masks (the old version's stay, traceable by their version)."""
    from engine.stages import automatic

    user = job.created_by
    # One already running is fine: the next upload or click embeds lazily.
    with contextlib.suppress(EngineError):
        embeddings.enqueue_precompute(project, user=user)
    if Mask.objects.filter(image__project=project, source_stage=MaskSource.AUTOMATIC).exists():
        with contextlib.suppress(EngineError):
            automatic.enqueue(project, version_id=version.pk, images="pending", user=user)

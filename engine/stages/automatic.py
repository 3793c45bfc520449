"""The fully automatic stage (SA paper, stage 3): a model version labels whole images alone.

An admin starts one job per model version over all images, the images that version has not
labelled yet, or a selection. The job splits the images into chunks, one Celery task each on
the ``gpu`` queue, so that several workers share a job; the task that finishes last records
the job's outcome.

Idempotent and resumable. Each image's result is written in one transaction: that version's
unreviewed automatic masks of the image are replaced and an ``AutomaticLabel`` row records
that the image is done. A re-run therefore replaces instead of duplicating; a chunk task
redelivered after its worker died skips the images its job already did; and a new job with
``images="pending"`` continues with the images not yet done. Masks a reviewer has already
accepted or fixed are kept, and a new mask that repeats one of them is not added again.

Fault tolerant across hosts (docs/multihost.md). Within one job an image is stored at most
once, checked under the image's row lock, so two deliveries of one chunk (a re-sent task, a
redelivered message) never store it twice. A job whose chunks made no progress for
``MASKLOOP_JOB_REDISPATCH_SECONDS`` gets its unfinished chunks sent again by the reconciler
(``engine.jobs.reconcile``): their worker died, or the broker lost them. A lost database
connection is the database's fault, not the image's: the chunk task is retried instead of
recording the image as failed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Sum
from django.utils import timezone

from annotator.models import (
    AutomaticLabel,
    Image,
    Job,
    JobChunk,
    Mask,
    MaskSource,
    ModelVersion,
    Project,
)
from engine import embeddings, jobs, predictors, rle
from engine import images as image_service
from engine.errors import Conflict, InvalidInput

logger = logging.getLogger(__name__)

#: Raised out of a chunk instead of being recorded as the image's failure: the database went
#: away (the task is retried), or the task ran out of time (the chunk fails, saying so).
NOT_THE_IMAGES_FAULT = (OperationalError, InterfaceError, SoftTimeLimitExceeded)

KIND = "automatic"
SELECTIONS = ("pending", "all")
#: A new mask repeating a reviewed one (mask IoU above this) is not added on a re-run.
DUPLICATE_IOU = 0.9


def _config_fields() -> dict[str, type]:
    from model.amg import AMGConfig

    return {f.name: type(f.default) for f in dataclasses.fields(AMGConfig)}


def check_settings(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Validated generator settings (400 naming the bad one)."""
    from model.amg import AMGConfig

    if preset not in AMGConfig.PRESETS:
        raise InvalidInput(f"preset must be one of {sorted(AMGConfig.PRESETS)}", field="preset")
    if not isinstance(overrides, dict):
        raise InvalidInput("settings must be an object of generator parameters", field="settings")
    fields = _config_fields()
    clean: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in fields:
            raise InvalidInput(
                f"unknown generator parameter {name!r}; known: {sorted(fields)}", field=name
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{name} must be a number", field=name)
        if fields[name] is int:
            if value != int(value):
                raise InvalidInput(f"{name} must be a whole number", field=name)
            value = int(value)
        clean[name] = value
    try:
        AMGConfig.preset(preset, **clean)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return clean


def check_project_settings(value: Any) -> dict[str, Any]:
    """``settings["automatic"]``: a project's defaults for its automatic runs, ``preset`` and
    generator parameters (e.g. thresholds calibrated for its model), checked on save."""
    if not isinstance(value, dict):
        raise InvalidInput(
            'settings["automatic"] must be an object, e.g. {"pred_iou_thresh": 0.6}',
            field="automatic",
        )
    own = dict(value)
    preset = own.pop("preset", "fast")
    if not isinstance(preset, str):
        raise InvalidInput('settings["automatic"]["preset"] must be a name', field="preset")
    return {"preset": preset, **check_settings(preset, own)}


def run_settings(
    project: Project, preset: str | None = None, overrides: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """The preset and generator parameters of a run: the run's own, over the project's
    ``settings["automatic"]``, over the preset's (DECISIONS 12a: the ``sa1b`` preset keeps the
    paper's thresholds; a project whose model is calibrated otherwise overrides them)."""
    if overrides is not None and not isinstance(overrides, dict):
        raise InvalidInput("settings must be an object of generator parameters", field="settings")
    own = check_project_settings(project.settings.get("automatic") or {})
    project_preset = str(own.pop("preset"))
    chosen = preset or project_preset
    return chosen, check_settings(chosen, {**own, **(overrides or {})})


def _version(project: Project, version_id: int | None) -> ModelVersion:
    if version_id is None:
        version = predictors.answering_version(project)
        if version is None:
            raise Conflict(
                "the automatic stage needs a model: this project answers clicks with GrabCut "
                "(no model version with a checkpoint is promoted)"
            )
        return version
    version = ModelVersion.objects.filter(project=project, pk=version_id).first()
    if version is None:
        raise InvalidInput(f"model version {version_id} is not a version of this project")
    if not version.checkpoint:
        raise InvalidInput(f"model version {version.number} has no checkpoint")
    return version


def check_selection(project: Project, images: Any) -> str | list[int]:
    """ "pending", "all", or a list of ids that are all this project's images (400 if not)."""
    if isinstance(images, str):
        if images not in SELECTIONS:
            raise InvalidInput(f"images must be one of {list(SELECTIONS)} or a list of ids")
        return images
    if (
        not isinstance(images, list)
        or not images
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in images)
    ):
        raise InvalidInput("images must be a non-empty list of image ids")
    ids = sorted(set(images))
    known = set(project.images.filter(pk__in=ids).values_list("pk", flat=True))
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise InvalidInput(f"images {unknown[:20]} are not images of this project")
    return ids


def enqueue(
    project: Project,
    *,
    version_id: int | None = None,
    images: str | list[int] = "pending",
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    source: str = MaskSource.AUTOMATIC,
    user: Any = None,
) -> Job:
    """Start the automatic stage for a version (default: the promoted one).

    images: "pending" (not yet labelled by that version), "all" (re-run everywhere), or a
    list of image ids of the project. preset and overrides: the run's own, over the project's
    defaults (``run_settings``); the semi-automatic pre-fill passes its whole setting.
    source: ``automatic``, or ``semi`` for the pre-fill (engine.stages.semi).
    """
    version = _version(project, version_id)
    if source == MaskSource.AUTOMATIC:
        preset, clean = run_settings(project, preset, overrides)
    else:
        preset = preset or "fast"
        clean = check_settings(preset, overrides or {})
    selection = check_selection(project, images)
    return jobs.enqueue(
        project,
        KIND,
        key=f"v{version.pk}" if source == MaskSource.AUTOMATIC else f"v{version.pk}:{source}",
        params={
            "version": version.pk,
            "images": selection,
            "preset": preset,
            "settings": clean,
            "source": source,
        },
        user=user,
    )


def selected_images(
    project: Project,
    version: ModelVersion,
    selection: str | list[int],
    source: str = MaskSource.AUTOMATIC,
) -> list[int]:
    """Ids of the images a run covers: a list as given, "all", or "pending" (not yet
    labelled by the version; for the semi-automatic pre-fill, also not yet opened)."""
    images = project.images.order_by("id")
    if isinstance(selection, list):
        return list(images.filter(pk__in=selection).values_list("pk", flat=True))
    if source == MaskSource.SEMI:
        images = images.filter(state=Image.State.NEW)
    if selection == "pending":
        done = AutomaticLabel.objects.filter(model_version=version, source=source)
        images = images.exclude(pk__in=done.values("image_id"))
    return list(images.values_list("pk", flat=True))


def run_here(
    project: Project,
    *,
    version_id: int | None = None,
    images: str | list[int] = "pending",
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    on_progress: Any = None,
) -> dict[str, Any]:
    """The automatic stage in this process, image by image (``manage.py run_automatic``);
    stored exactly as the job stores it, so the two may be mixed and resumed."""
    version = _version(project, version_id)
    preset, clean = run_settings(project, preset, overrides)
    ids = selected_images(project, version, check_selection(project, images))  # automatic
    generator = _generator(version, preset, clean)
    masks = 0
    failures: list[dict[str, Any]] = []
    start = time.perf_counter()
    for done, image_id in enumerate(ids, start=1):
        image = Image.objects.filter(pk=image_id, project=project).first()
        if image is not None:
            try:
                masks += label_image(image, version, generator, job=None, preset=preset) or 0
            except Exception as exc:
                failures.append({"image": image_id, "error": str(exc)[:300]})
        if on_progress is not None:
            on_progress(done, len(ids))
    return {
        "images": len(ids) - len(failures),
        "masks": masks,
        "seconds": round(time.perf_counter() - start, 2),
        "failures": failures,
        "version": version.number,
    }


@jobs.runner(KIND)
def _start(context: jobs.JobContext) -> dict[str, Any]:
    """Split the selected images into chunks and send one task per chunk."""
    job = context.job
    version = ModelVersion.objects.filter(pk=job.params["version"]).first()
    if version is None or not version.checkpoint:
        raise InvalidInput("the model version was deleted or has no checkpoint")
    image_ids = selected_images(
        job.project, version, job.params["images"], job.params.get("source", "automatic")
    )
    if not image_ids:
        return {"images": 0, "masks": 0, "failures": [], "version": version.number}
    size = max(1, int(settings.MASKLOOP_AUTOMATIC_CHUNK))
    chunks = JobChunk.objects.bulk_create(
        JobChunk(job=job, index=i, image_ids=image_ids[start : start + size])
        for i, start in enumerate(range(0, len(image_ids), size))
    )
    job.params = {**job.params, "total": len(image_ids)}
    Job.objects.filter(pk=job.pk).update(params=job.params)
    context.progress(0.0, f"0/{len(image_ids)} images ({len(chunks)} tasks)")

    from engine.tasks import automatic_chunk

    _, queue = jobs.JOB_KINDS[KIND]
    for chunk in chunks:
        automatic_chunk.apply_async(args=(chunk.pk,), queue=queue)
    return jobs.DETACHED


def run_chunk(chunk_id: int) -> None:
    """The work of one chunk task; safe to run again, and twice at once."""
    chunk = JobChunk.objects.select_related("job").filter(pk=chunk_id).first()
    if chunk is None:
        return
    if chunk.state not in Job.ACTIVE_STATES:
        # A copy of a finished chunk. The job may still wait for its outcome: the task that
        # finished the chunk may have lost the database before recording it.
        _finish_if_complete(chunk.job_id)
        return
    job = chunk.job
    if job.state != Job.State.RUNNING:
        JobChunk.objects.filter(pk=chunk.pk).update(state=Job.State.CANCELLED)
        _finish_if_complete(job.pk)
        return
    JobChunk.objects.filter(pk=chunk.pk).update(state=Job.State.RUNNING)
    # A sign of life before the model loads: the reconciler must not take this chunk as lost.
    Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(heartbeat_at=timezone.now())
    logger.info(
        "automatic stage: job %s chunk %s started (%d images)",
        job.pk,
        chunk.pk,
        len(chunk.image_ids),
    )
    version = ModelVersion.objects.get(pk=job.params["version"])
    generator = _generator(version, job.params["preset"], job.params.get("settings", {}))
    done_here = set(
        AutomaticLabel.objects.filter(
            job=job, model_version=version, image_id__in=chunk.image_ids
        ).values_list("image_id", flat=True)
    )
    failures = list(chunk.failures)
    done = len(done_here) + len(failures)
    state = Job.State.SUCCEEDED
    for image_id in chunk.image_ids:
        if image_id in done_here or any(f["image"] == image_id for f in failures):
            continue
        if not Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).exists():
            state = Job.State.CANCELLED
            break
        image = Image.objects.filter(pk=image_id, project_id=job.project_id).first()
        if image is not None:
            try:
                stored = label_image(
                    image,
                    version,
                    generator,
                    job=job,
                    preset=job.params["preset"],
                    source=job.params.get("source", MaskSource.AUTOMATIC),
                )
            except NOT_THE_IMAGES_FAULT:
                raise
            except Exception as exc:  # one bad image must not stop the others
                logger.exception("automatic stage: image %s failed", image_id)
                failures.append({"image": image_id, "error": str(exc)[:300]})
            else:
                if stored is None:
                    logger.info(
                        "automatic stage: image %s was already stored by job %s", image_id, job.pk
                    )
                else:
                    logger.info(
                        "automatic stage: job %s chunk %s labelled image %s (%d masks)",
                        job.pk,
                        chunk.pk,
                        image_id,
                        stored,
                    )
        done += 1
        JobChunk.objects.filter(pk=chunk.pk).update(done=done, failures=failures)
        _report_progress(job.pk)
    JobChunk.objects.filter(pk=chunk.pk).update(state=state, done=done, failures=failures)
    _finish_if_complete(job.pk)


def _generator(version: ModelVersion, preset: str, overrides: dict[str, Any]) -> Any:
    from model.amg import AMGConfig, AutomaticMaskGenerator

    predictor = predictors.make_predictor(version)
    return AutomaticMaskGenerator(predictor, AMGConfig.preset(preset, **overrides))  # type: ignore[arg-type]


def label_image(
    image: Image,
    version: ModelVersion,
    generator: Any,
    *,
    job: Job | None,
    preset: str,
    source: str = MaskSource.AUTOMATIC,
) -> int | None:
    """Generate the image's masks and store them in one transaction; returns how many are
    new (reviewed masks of the version are kept, pending ones replaced), or None when the
    job had already stored this image (another delivery of its chunk got there first)."""
    start = time.perf_counter()
    rgb = image_service.read_rgb(image)
    embedding = embeddings.stored_embedding(image, version)
    generated = generator.generate(rgb, embedding=embedding)
    seconds = time.perf_counter() - start
    with transaction.atomic():
        Image.objects.select_for_update().filter(pk=image.pk).first()
        # Under the lock, so that two deliveries of one chunk running at once store the
        # image once: the second sees the first's label and keeps its masks.
        labels = AutomaticLabel.objects.filter(image=image, model_version=version, source=source)
        if job is not None and labels.filter(job=job).exists():
            return None
        automatic = Mask.objects.filter(image=image, model_version=version, source_stage=source)
        reviewed = [
            rle.to_mask(rle.Rle(height=image.height, width=image.width, counts=m.rle_counts))
            for m in automatic.exclude(review_state=Mask.ReviewState.PENDING)
        ]
        automatic.filter(review_state=Mask.ReviewState.PENDING).delete()
        rows = []
        for g in generated:
            if any(rle.mask_iou(g.mask, kept) > DUPLICATE_IOU for kept in reviewed):
                continue
            encoded = rle.from_mask(g.mask)
            rows.append(
                Mask(
                    image=image,
                    rle_counts=encoded.counts,
                    bbox=rle.bbox(encoded),
                    area=rle.area(encoded),
                    source_stage=source,
                    model_version=version,
                    predicted_iou=g.predicted_iou,
                    stability_score=g.stability_score,
                    point_coords=g.point_coords,
                    crop_box=g.crop_box,
                )
            )
        Mask.objects.bulk_create(rows, batch_size=500)
        AutomaticLabel.objects.update_or_create(
            image=image,
            model_version=version,
            source=source,
            defaults={
                "job": job,
                "preset": preset,
                "masks": len(rows) + len(reviewed),  # the version's masks on the image now
                "seconds": seconds,
            },
        )
        # Pre-filled (semi) images still wait for their annotator.
        if rows and image.state == Image.State.NEW and source == MaskSource.AUTOMATIC:
            Image.objects.filter(pk=image.pk).update(state=Image.State.ANNOTATED)
    return len(rows)


def _report_progress(job_id: int) -> None:
    job = Job.objects.filter(pk=job_id).values("params").first()
    if job is None:
        return
    total = int(job["params"].get("total") or 1)
    done = JobChunk.objects.filter(job_id=job_id).aggregate(n=Sum("done"))["n"] or 0
    Job.objects.filter(pk=job_id, state=Job.State.RUNNING).update(
        progress=min(done / total, 1.0),
        message=f"{done}/{total} images",
        heartbeat_at=timezone.now(),
    )
    jobs.announce(job_id)


@jobs.redispatcher(KIND)
def redispatch(job: Job) -> int:
    """Send the unfinished chunks of a job that made no progress again (``jobs.reconcile``).

    Their worker died, or the broker lost them (Redis restarted), or they still wait behind
    other work: sending one twice is harmless, as a finished chunk's copy returns at once and
    an image is stored once per job.
    """
    from engine.tasks import automatic_chunk

    chunks = JobChunk.objects.filter(job=job)
    if not chunks.exists():
        # The task that splits the job died before it had made the chunks: split it now.
        result = _start(jobs.JobContext(job))
        if result is not jobs.DETACHED:
            jobs.finish(job.pk, result)
        return JobChunk.objects.filter(job=job).count()
    unfinished = list(chunks.filter(state__in=Job.ACTIVE_STATES).values_list("pk", flat=True))
    _, queue = jobs.JOB_KINDS[KIND]
    for chunk_id in unfinished:
        automatic_chunk.apply_async(args=(chunk_id,), queue=queue)
    if not unfinished:
        _finish_if_complete(job.pk)  # every chunk ended, but nobody recorded the outcome
    return len(unfinished)


def fail_chunk(chunk_id: int, error: str) -> None:
    """A chunk task that crashed (the model would not load, ...): the job cannot complete."""
    JobChunk.objects.filter(pk=chunk_id, state__in=Job.ACTIVE_STATES).update(
        state=Job.State.FAILED, failures=[{"image": None, "error": error[:300]}]
    )
    chunk = JobChunk.objects.filter(pk=chunk_id).first()
    if chunk is not None:
        _finish_if_complete(chunk.job_id)


def _finish_if_complete(job_id: int) -> None:
    """Record the job's outcome once no chunk is left to run (exactly once)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.state in (Job.State.SUCCEEDED, Job.State.FAILED):
            return
        chunks = list(JobChunk.objects.filter(job=job))
        if any(c.state in Job.ACTIVE_STATES for c in chunks):
            return
        version = ModelVersion.objects.filter(pk=job.params["version"]).first()
        labels = AutomaticLabel.objects.filter(job=job)
        result = {
            "images": labels.count(),
            "masks": labels.aggregate(n=Sum("masks"))["n"] or 0,
            "seconds": round(labels.aggregate(s=Sum("seconds"))["s"] or 0.0, 2),
            "failures": [f for c in chunks for f in c.failures],
            "version": version.number if version is not None else None,
        }
        crashed = [c for c in chunks if c.state == Job.State.FAILED]
        if crashed and job.state == Job.State.RUNNING:
            Job.objects.filter(pk=job_id).update(
                state=Job.State.FAILED,
                result=result,
                message=f"{len(crashed)} of {len(chunks)} tasks failed: "
                + crashed[0].failures[0]["error"],
                finished_at=timezone.now(),
            )
            transaction.on_commit(lambda: jobs.announce(job_id))
            return
    jobs.finish(job_id, result)


def summary(project: Project) -> list[dict[str, Any]]:
    """Per model version: images labelled, masks, seconds per image."""
    rows = (
        AutomaticLabel.objects.filter(image__project=project, source=MaskSource.AUTOMATIC)
        .values("model_version__number")
        .order_by("model_version__number")
    )
    out = []
    for number in dict.fromkeys(r["model_version__number"] for r in rows):
        labels = AutomaticLabel.objects.filter(
            image__project=project, model_version__number=number, source=MaskSource.AUTOMATIC
        )
        count = labels.count()
        seconds = labels.aggregate(s=Sum("seconds"))["s"] or 0.0
        out.append(
            {
                "version": number,
                "images": count,
                "masks": labels.aggregate(n=Sum("masks"))["n"] or 0,
                "seconds_per_image": round(seconds / count, 3) if count else None,
            }
        )
    return out

"""The data model: projects and their members, images, masks with their provenance, the
clicks that made them, model versions and background jobs."""

from __future__ import annotations

from django.conf import settings as conf
from django.db import models
from django.db.models import Q


class Stage(models.TextChoices):
    ASSISTED = "assisted", "Assisted-manual"
    SEMI = "semi", "Semi-automatic"
    AUTOMATIC = "automatic", "Fully automatic"


class MaskSource(models.TextChoices):
    """Where a mask came from: one of the stages, or an import of existing labels."""

    ASSISTED = "assisted", "Assisted-manual"
    SEMI = "semi", "Semi-automatic"
    AUTOMATIC = "automatic", "Fully automatic"
    IMPORTED = "imported", "Imported"


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    ANNOTATOR = "annotator", "Annotator"
    REVIEWER = "reviewer", "Reviewer"


class Project(models.Model):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.ASSISTED)
    # Per-project overrides, e.g. automatic-stage thresholds (DECISIONS 12a).
    settings = models.JSONField(default=dict, blank=True)
    members = models.ManyToManyField(
        conf.AUTH_USER_MODEL, through="Membership", related_name="projects"
    )
    created_by = models.ForeignKey(
        conf.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name

    def promoted_version(self) -> ModelVersion | None:
        return self.model_versions.filter(state=ModelVersion.State.PROMOTED).first()


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        conf.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} as {self.role} in {self.project}"


class Category(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="categories")
    name = models.CharField(max_length=100)
    supercategory = models.CharField(max_length=100, blank=True)
    color = models.CharField(max_length=7, default="#1f77b4")

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "categories"
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="unique_category_name")
        ]

    def __str__(self) -> str:
        return self.name


def image_upload_path(instance: Image, filename: str) -> str:
    return (
        f"projects/{instance.project_id}/images/{instance.sha256[:2]}/{instance.sha256}/{filename}"
    )


class Image(models.Model):
    class State(models.TextChoices):
        NEW = "new", "New"
        IN_PROGRESS = "in_progress", "In progress"
        ANNOTATED = "annotated", "Annotated"
        REVIEWED = "reviewed", "Reviewed"
        SKIPPED = "skipped", "Skipped"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    # What the model and the browser see: 8-bit RGB, EXIF orientation applied.
    file = models.FileField(upload_to=image_upload_path, max_length=500)
    # The upload as it came, kept only when it differed from ``file`` (DECISIONS 15).
    original = models.FileField(upload_to=image_upload_path, max_length=500, blank=True)
    file_name = models.CharField(max_length=500, help_text="Name as uploaded or imported")
    sha256 = models.CharField(max_length=64, help_text="Of the original bytes")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.NEW)
    uploaded_by = models.ForeignKey(
        conf.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A lease, so that two annotators are not handed the same image at the same time.
    assigned_to = models.ForeignKey(
        conf.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    assigned_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "sha256"], name="unique_image_per_project")
        ]

    def __str__(self) -> str:
        return self.file_name


class ModelVersion(models.Model):
    class State(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        PROMOTED = "promoted", "Promoted"
        REJECTED = "rejected", "Rejected"
        RETIRED = "retired", "Retired"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField(help_text="0 for the shipped starter model")
    checkpoint = models.FileField(upload_to="checkpoints/", max_length=500, blank=True)
    checkpoint_sha256 = models.CharField(max_length=64, blank=True)
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.CANDIDATE)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(
        conf.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="unique_version_number"),
            # At most one promoted version per project: the one that answers clicks.
            models.UniqueConstraint(
                fields=["project"], condition=Q(state="promoted"), name="one_promoted_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project} v{self.number} ({self.state})"


class Mask(models.Model):
    class ReviewState(models.TextChoices):
        PENDING = "pending", "Pending"
        ACCEPTED = "accepted", "Accepted"
        FIXED = "fixed", "Fixed"
        REJECTED = "rejected", "Rejected"

    class VerificationState(models.TextChoices):
        UNVERIFIED = "unverified", "Not verified"
        GOOD = "good", "Good"
        BAD = "bad", "Bad"
        # Decided by the promoted learned verifier alone (engine/verifiers.py); the
        # ``VerifierScore`` row of the mask names the verifier version that decided.
        AUTO_GOOD = "auto_good", "Good (verifier)"
        AUTO_BAD = "auto_bad", "Bad (verifier)"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="masks")
    category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.PROTECT, related_name="masks"
    )
    # COCO compressed RLE, the SA-1B representation: size = [height, width].
    rle_counts = models.TextField()
    # A model's mask as it came, kept when a person first changes it: the review figures
    # compare it with the corrected mask (the paper's IoU-before-vs-after check).
    original_rle_counts = models.TextField(blank=True)
    bbox = models.JSONField(help_text="[x, y, width, height] in pixels, COCO convention")
    area = models.PositiveIntegerField()
    source_stage = models.CharField(max_length=16, choices=MaskSource.choices)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="masks"
    )
    predicted_iou = models.FloatField(null=True, blank=True)
    stability_score = models.FloatField(null=True, blank=True)
    point_coords = models.JSONField(default=list, blank=True)
    crop_box = models.JSONField(null=True, blank=True)
    is_crowd = models.BooleanField(
        default=False,
        help_text="COCO iscrowd: a region covering a group of objects (kept from imports)",
    )
    created_by = models.ForeignKey(
        conf.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_by = models.ForeignKey(
        conf.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    seconds_spent = models.FloatField(default=0.0)
    clicks = models.PositiveIntegerField(default=0)
    review_state = models.CharField(
        max_length=16, choices=ReviewState.choices, default=ReviewState.PENDING
    )
    # Verification by people (engine/verification.py), after the review: good or bad, one
    # verdict per mask of the semi-automatic and automatic stages. A bad mask is also
    # ``review_state = rejected`` (out of the accepted set), never deleted. auto_good /
    # auto_bad: the promoted learned verifier decided instead of a person.
    verification_state = models.CharField(
        max_length=16, choices=VerificationState.choices, default=VerificationState.UNVERIFIED
    )
    # Optimistic locking: a save must name the version it edited (DECISIONS 19).
    revision = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["image", "review_state"]),
            models.Index(fields=["source_stage", "verification_state"]),
        ]

    def __str__(self) -> str:
        return f"mask {self.pk} on {self.image_id}"

    @property
    def segmentation(self) -> dict[str, object]:
        return {"size": [self.image.height, self.image.width], "counts": self.rle_counts}


class PromptLog(models.Model):
    """One prompt event of an annotation (a click, a box, a mask choice, a brush stroke).

    Events of one annotation share ``session``; the mask they ended in is set on save, so
    seconds per mask and clicks per mask come from these rows.
    """

    class Kind(models.TextChoices):
        POINT = "point", "Point"
        BOX = "box", "Box"
        CHOOSE = "choose", "Choice among candidates"
        BRUSH = "brush", "Brush"
        ERASE = "erase", "Eraser"
        SAVE = "save", "Save"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="prompt_logs")
    mask = models.ForeignKey(
        Mask, null=True, blank=True, on_delete=models.SET_NULL, related_name="prompt_logs"
    )
    user = models.ForeignKey(
        conf.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    session = models.UUIDField(db_index=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    data = models.JSONField(default=dict, blank=True, help_text="e.g. {x, y, label}")
    client_time = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} on image {self.image_id}"


class Job(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE_STATES = (State.QUEUED, State.RUNNING)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=32)
    # Same kind + key while active = the same job (409 instead of a second copy).
    key = models.CharField(max_length=200, blank=True)
    params = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    progress = models.FloatField(default=0.0, help_text="0 to 1")
    message = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    celery_id = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        conf.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Last sign of life from a worker: a running job silent for longer than
    # MASKLOOP_JOB_STALE_SECONDS lost its worker and no longer blocks a new job of its key.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "kind", "key"],
                condition=Q(state__in=["queued", "running"]),
                name="one_active_job_per_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk} ({self.state})"


def export_upload_path(instance: Export, filename: str) -> str:
    return f"exports/{instance.project_id}/{filename}"


class Export(models.Model):
    """A finished export file (SA-1B shards or COCO), downloadable until ``expires_at``."""

    class Format(models.TextChoices):
        SA1B = "sa1b", "SA-1B"
        COCO = "coco", "COCO instances"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="exports")
    job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="exports"
    )
    format = models.CharField(max_length=8, choices=Format.choices)
    params = models.JSONField(default=dict, blank=True)
    file = models.FileField(upload_to=export_upload_path, max_length=500)
    size = models.PositiveBigIntegerField(default=0)
    images = models.PositiveIntegerField(default=0)
    masks = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        conf.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.format} export {self.pk} of {self.project}"


class JobChunk(models.Model):
    """A slice of a job's images run by its own Celery task (so that several workers share a
    job); the last chunk to finish completes the job."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    image_ids = models.JSONField(default=list)
    state = models.CharField(max_length=16, choices=Job.State.choices, default=Job.State.QUEUED)
    done = models.PositiveIntegerField(default=0)
    failures = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="unique_chunk_index"),
        ]

    def __str__(self) -> str:
        return f"chunk {self.index} of job {self.job_id} ({self.state})"


class AutomaticLabel(models.Model):
    """An image labelled by the automatic stage with one model version. It makes a re-run
    replace instead of duplicate, and a killed job resume with the images not yet done."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="automatic_labels")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="automatic_labels"
    )
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # "automatic", or "semi" for the semi-automatic stage's pre-fill.
    source = models.CharField(max_length=16, choices=MaskSource.choices, default="automatic")
    preset = models.CharField(max_length=32)
    masks = models.PositiveIntegerField(default=0, help_text="masks kept")
    seconds = models.FloatField(default=0.0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["image", "model_version"]
        constraints = [
            models.UniqueConstraint(
                fields=["image", "model_version", "source"],
                name="one_automatic_label_per_version_and_source",
            ),
        ]

    def __str__(self) -> str:
        return f"image {self.image_id} by version {self.model_version_id}: {self.masks} masks"


class VerificationDecision(models.Model):
    """One decision of the verification by people (engine/verification.py): a mask judged
    good or bad, or an image checked for objects nobody masked (yes / no, with the places
    missed). Kept with who, when, the seconds the page measured, and a copy of the mask's
    fields at that time, so that a mask changed or deleted later does not change the record
    (the learned verifier trains on these rows)."""

    class Kind(models.TextChoices):
        MASK = "mask", "Mask verification"
        EXHAUSTIVITY = "exhaustivity", "Exhaustivity check"

    class Verdict(models.TextChoices):
        GOOD = "good", "Good mask"
        BAD = "bad", "Bad mask"
        YES = "yes", "Every object masked"
        NO = "no", "Objects missed"

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="verification_decisions"
    )
    image = models.ForeignKey(
        Image, on_delete=models.CASCADE, related_name="verification_decisions"
    )
    mask = models.ForeignKey(
        Mask,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="verification_decisions",
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    verdict = models.CharField(max_length=8, choices=Verdict.choices)
    # Exhaustivity "no": the places the reviewer found an object nobody masked, [[x, y], ...]
    # in image pixels; shown to the annotator as hints.
    points = models.JSONField(default=list, blank=True)
    note = models.CharField(max_length=300, blank=True)
    # The mask's (or the image's) fields when the decision was taken.
    snapshot = models.JSONField(default=dict, blank=True)
    seconds = models.FloatField(default=0.0, help_text="measured by the page")
    user = models.ForeignKey(
        conf.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["project", "kind"]),
            models.Index(fields=["image", "kind"]),
        ]

    def __str__(self) -> str:
        target = f"mask {self.mask_id}" if self.kind == self.Kind.MASK else f"image {self.image_id}"
        return f"{self.verdict} on {target}"


class VerifierVersion(models.Model):
    """A learned mask verifier trained on the project's verification decisions
    (engine/verifiers.py): the fitted model as a small JSON document, its thresholds, and
    the held-out figures that decided whether it replaced the people's check.

    At most one is promoted per project; while it is, the mask queue shows people only what
    it is unsure of plus an audit sample of what it decided, and it is demoted automatically
    when the audited decisions disagree with it too often."""

    class State(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        PROMOTED = "promoted", "Promoted"
        REJECTED = "rejected", "Rejected"
        DEMOTED = "demoted", "Demoted"
        # Was promoted, then replaced by a newer promoted version.
        RETIRED = "retired", "Retired"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="verifier_versions")
    number = models.PositiveIntegerField(help_text="1, 2, ... per project")
    state = models.CharField(max_length=16, choices=State.choices, default=State.CANDIDATE)
    # Why it is in its state, with figures: the gate's verdict, a demotion's agreement.
    reason = models.TextField(blank=True)
    # ``model.verifier.Verifier.to_dict()``: features, standardisation, weights, threshold.
    verifier = models.JSONField(default=dict, blank=True)
    target = models.FloatField(help_text="the precision its auto-accepted masks must reach")
    # Auto-accept when P(good) >= threshold; auto-reject when 1 - P(good) >= reject_threshold
    # (the same calibration on the rejected side). None: it decides nothing on that side.
    threshold = models.FloatField(null=True, blank=True)
    reject_threshold = models.FloatField(null=True, blank=True)
    # Held-out figures: counts, the verifier's and the fixed SA-1B filters' precision and
    # share accepted on the same held-out masks, the calibration (engine/verifiers.py).
    figures = models.JSONField(default=dict, blank=True)
    # Whose image embeddings its features read (None: no embedding, GrabCut answered).
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The newest decision it was trained on: "new decisions" are those after it.
    last_decision = models.PositiveBigIntegerField(default=0)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(
        conf.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    # When it stopped deciding (demoted or retired).
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "number"], name="unique_verifier_version_number"
            ),
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(state="promoted"),
                name="one_promoted_verifier_version",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project} verifier v{self.number} ({self.state})"


class VerifierScore(models.Model):
    """What a verifier version said of one queued mask: its probability that a reviewer
    accepts it, the call (accept / reject / unsure), and whether the mask was kept for people
    as part of the audit sample. A confident call outside the audit sample was applied: the
    mask became auto_good or auto_bad (``previous_review_state`` lets a demotion undo an
    acceptance)."""

    class Call(models.TextChoices):
        ACCEPT = "accept", "Accept"
        REJECT = "reject", "Reject"
        UNSURE = "unsure", "Unsure"

    verifier = models.ForeignKey(VerifierVersion, on_delete=models.CASCADE, related_name="scores")
    mask = models.ForeignKey(Mask, on_delete=models.CASCADE, related_name="verifier_scores")
    probability = models.FloatField()
    call = models.CharField(max_length=8, choices=Call.choices)
    audit = models.BooleanField(default=False)
    applied = models.BooleanField(default=False)
    previous_review_state = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["verifier", "mask"], name="one_score_per_verifier")
        ]
        indexes = [models.Index(fields=["verifier", "call"])]

    def __str__(self) -> str:
        return f"verifier {self.verifier_id} on mask {self.mask_id}: {self.call}"

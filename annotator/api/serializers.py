"""Serializers: shape and validate what crosses the API; the engine does the changes."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.urls import reverse
from rest_framework import serializers

from annotator.models import (
    Category,
    Image,
    Job,
    Mask,
    Membership,
    ModelVersion,
    Project,
    PromptLog,
    Stage,
    VerificationDecision,
    VerifierVersion,
)
from engine import verification
from engine.errors import EngineError
from engine.jobs import JOB_KINDS
from engine.projects import role_of
from engine.stages import automatic


class ProjectSerializer(serializers.ModelSerializer[Project]):
    my_role = serializers.SerializerMethodField()
    image_count = serializers.IntegerField(read_only=True, required=False)
    categories = serializers.ListField(
        child=serializers.CharField(max_length=100), write_only=True, required=False
    )

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "description",
            "stage",
            "settings",
            "categories",
            "my_role",
            "image_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def get_my_role(self, project: Project) -> str | None:
        roles: dict[int, str] = self.context.get("roles", {})
        if project.pk in roles:
            return roles[project.pk]
        return role_of(self.context["request"].user, project)

    def validate_settings(self, value: Any) -> Any:
        """The engine reads ``settings`` as an object; its verification part (sample, the
        verifier's target and audit) is checked on save rather than at its first use."""
        if not isinstance(value, dict):
            raise serializers.ValidationError('settings must be an object, e.g. {"semi": {}}')
        try:
            if "verification" in value:
                verification.check_settings(value["verification"])
            if "automatic" in value:
                automatic.check_project_settings(value["automatic"])
        except EngineError as exc:
            raise serializers.ValidationError(exc.message) from None
        return value


class MembershipSerializer(serializers.ModelSerializer[Membership]):
    username = serializers.SlugRelatedField(
        source="user", slug_field="username", queryset=get_user_model().objects.all()
    )

    class Meta:
        model = Membership
        fields = ["id", "username", "role", "created_at"]
        read_only_fields = ["created_at"]


class CategorySerializer(serializers.ModelSerializer[Category]):
    class Meta:
        model = Category
        fields = ["id", "name", "supercategory", "color"]

    def validate_name(self, value: str) -> str:
        project = self.context["project"]
        clash = Category.objects.filter(project=project, name=value)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise serializers.ValidationError("this project already has a category of that name")
        return value

    def validate_color(self, value: str) -> str:
        if (
            len(value) != 7
            or value[0] != "#"
            or any(c not in "0123456789abcdefABCDEF" for c in value[1:])
        ):
            raise serializers.ValidationError("color must look like #1f77b4")
        return value


class ImageSerializer(serializers.ModelSerializer[Image]):
    file_url = serializers.SerializerMethodField()
    assigned_to: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    mask_count = serializers.IntegerField(read_only=True, required=False)
    has_original = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "id",
            "file_name",
            "sha256",
            "width",
            "height",
            "state",
            "file_url",
            "has_original",
            "mask_count",
            "assigned_to",
            "assigned_until",
            "created_at",
        ]
        read_only_fields = [
            "file_name",
            "sha256",
            "width",
            "height",
            "assigned_to",
            "assigned_until",
            "created_at",
        ]

    def get_file_url(self, image: Image) -> str:
        return reverse("image-file", kwargs={"project_pk": image.project_id, "pk": image.pk})

    def get_has_original(self, image: Image) -> bool:
        return bool(image.original)


class ImageUploadSerializer(serializers.Serializer[Any]):
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=False), allow_empty=False
    )


class NextImageSerializer(serializers.Serializer[Any]):
    after = serializers.IntegerField(required=False, help_text="move past this image")


class ImportFolderSerializer(serializers.Serializer[Any]):
    folder = serializers.CharField(max_length=1000)


class PredictSerializer(serializers.Serializer[Any]):
    """Documents the predict body; ``engine.stages.assisted.parse_prompt`` validates it."""

    points = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField()), required=False
    )
    labels = serializers.ListField(child=serializers.IntegerField(), required=False)
    box = serializers.ListField(child=serializers.FloatField(), required=False, allow_null=True)
    multimask = serializers.BooleanField(default=True)


class SegmentationField(serializers.JSONField):
    """COCO RLE ``{"size": [h, w], "counts": ...}``; checked against the image by the engine."""


class MaskSerializer(serializers.ModelSerializer[Mask]):
    segmentation = SegmentationField()
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    updated_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    image = serializers.IntegerField(source="image_id")
    category = serializers.IntegerField(source="category_id", allow_null=True, required=False)
    model_version = serializers.IntegerField(
        source="model_version_id", allow_null=True, required=False
    )
    session = serializers.UUIDField(write_only=True, required=False)
    revision = serializers.IntegerField(required=False)

    class Meta:
        model = Mask
        fields = [
            "id",
            "image",
            "category",
            "segmentation",
            "bbox",
            "area",
            "source_stage",
            "model_version",
            "predicted_iou",
            "stability_score",
            "point_coords",
            "crop_box",
            "is_crowd",
            "created_by",
            "updated_by",
            "seconds_spent",
            "clicks",
            "review_state",
            "verification_state",
            "revision",
            "session",
            "created_at",
            "updated_at",
        ]
        # The verification changes only through POST .../verification/.
        read_only_fields = ["bbox", "area", "verification_state", "created_at", "updated_at"]
        extra_kwargs = {"source_stage": {"required": False}}

    def validate_seconds_spent(self, value: float) -> float:
        if value < 0:
            raise serializers.ValidationError("must not be negative")
        return value

    def validate_point_coords(self, value: Any) -> Any:
        if not isinstance(value, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(c, int | float) for c in p)
            for p in value
        ):
            raise serializers.ValidationError("must be a list of [x, y] pairs")
        return value

    def validate_crop_box(self, value: Any) -> Any:
        if value is not None and (
            not isinstance(value, list)
            or len(value) != 4
            or not all(isinstance(c, int | float) for c in value)
        ):
            raise serializers.ValidationError("must be [x, y, width, height]")
        return value

    def validate_source_stage(self, value: str) -> str:
        if value not in Stage.values:
            raise serializers.ValidationError(f"must be one of {Stage.values}")
        return value


class PromptLogSerializer(serializers.ModelSerializer[PromptLog]):
    image = serializers.IntegerField(source="image_id")
    mask = serializers.IntegerField(source="mask_id", read_only=True)
    user: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )

    class Meta:
        model = PromptLog
        fields = [
            "id",
            "image",
            "mask",
            "user",
            "session",
            "kind",
            "data",
            "client_time",
            "created_at",
        ]
        read_only_fields = ["created_at"]


class JobSerializer(serializers.ModelSerializer[Job]):
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "key",
            "params",
            "state",
            "progress",
            "message",
            "result",
            "celery_id",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def validate_kind(self, value: str) -> str:
        if value not in JOB_KINDS:
            raise serializers.ValidationError(f"must be one of {sorted(JOB_KINDS)}")
        return value


class ModelVersionSerializer(serializers.ModelSerializer[ModelVersion]):
    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "number",
            "state",
            "config",
            "metrics",
            "parent",
            "checkpoint_sha256",
            "notes",
            "created_at",
        ]
        read_only_fields = fields


class AutomaticRequestSerializer(serializers.Serializer[Any]):
    """What starts the automatic stage (checked again, in depth, by the engine)."""

    version = serializers.IntegerField(required=False, help_text="default: the promoted one")
    images = serializers.JSONField(
        required=False, help_text='"pending" (default), "all", or a list of image ids'
    )
    preset = serializers.ChoiceField(
        choices=["fast", "sa1b"],
        required=False,
        help_text='default: the project\'s settings["automatic"]["preset"], else "fast"',
    )
    settings = serializers.DictField(
        required=False, help_text="generator parameters replacing the preset's"
    )


class RetrainRequestSerializer(serializers.Serializer[Any]):
    """Overrides of a retraining cycle's parameters (see engine/retraining.py DEFAULTS)."""

    params = serializers.DictField(
        required=False, help_text='e.g. {"steps": 500, "metric": "miou@3"}'
    )


class VerificationRequestSerializer(serializers.Serializer[Any]):
    """One verification decision. The engine checks the rest (the mask or image is the
    project's, still to verify; points inside the image)."""

    kind = serializers.ChoiceField(choices=VerificationDecision.Kind.choices)
    verdict = serializers.ChoiceField(choices=VerificationDecision.Verdict.choices)
    mask = serializers.IntegerField(required=False, help_text="kind mask: the mask judged")
    image = serializers.IntegerField(
        required=False, help_text="kind exhaustivity: the image checked"
    )
    points = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        required=False,
        help_text="exhaustivity 'no': the places of the missed objects, [[x, y], ...] in pixels",
    )
    seconds = serializers.FloatField(
        required=False, default=0.0, min_value=0, max_value=86_400, help_text="as measured"
    )
    note = serializers.CharField(required=False, allow_blank=True, max_length=300, default="")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        kind = data["kind"]
        if kind == VerificationDecision.Kind.MASK:
            if "mask" not in data:
                raise serializers.ValidationError({"mask": "a mask verdict names its mask"})
            if "image" in data or "points" in data:
                raise serializers.ValidationError(
                    "a mask verdict takes a mask, not an image or points"
                )
        elif "image" not in data:
            raise serializers.ValidationError({"image": "an exhaustivity check names its image"})
        elif "mask" in data:
            raise serializers.ValidationError("an exhaustivity check takes an image, not a mask")
        return data


class VerificationDecisionSerializer(serializers.ModelSerializer[VerificationDecision]):
    user: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    image_state = serializers.CharField(source="image.state", read_only=True)

    class Meta:
        model = VerificationDecision
        fields = [
            "id",
            "kind",
            "verdict",
            "mask",
            "image",
            "image_state",
            "points",
            "note",
            "seconds",
            "snapshot",
            "user",
            "created_at",
        ]
        read_only_fields = fields


class VerifierVersionSerializer(serializers.ModelSerializer[VerifierVersion]):
    """A learned verifier version with its gate's figures (engine/verifiers.py)."""

    model_version: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="number", read_only=True
    )
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )

    class Meta:
        model = VerifierVersion
        fields = [
            "id",
            "number",
            "state",
            "reason",
            "target",
            "threshold",
            "reject_threshold",
            "figures",
            "model_version",
            "last_decision",
            "job",
            "verifier",
            "created_by",
            "created_at",
            "promoted_at",
            "ended_at",
        ]
        read_only_fields = fields

"""Dataset exports and imports over the API (admins launch them; admins and reviewers
download exports, see annotator/api/permissions.py)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse, Http404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from annotator.api.serializers import JobSerializer
from annotator.api.views import ProjectScopedMixin
from annotator.models import Export
from engine import exports
from engine.errors import InvalidInput
from engine.io import imports


class ExportSerializer(serializers.ModelSerializer[Export]):
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    download = serializers.SerializerMethodField()

    class Meta:
        model = Export
        fields = [
            "id",
            "format",
            "params",
            "size",
            "images",
            "masks",
            "job",
            "created_by",
            "created_at",
            "expires_at",
            "download",
        ]
        read_only_fields = fields

    def get_download(self, export: Export) -> str:
        return f"/api/projects/{export.project_id}/exports/{export.pk}/download/"


class ExportRequestSerializer(serializers.Serializer[dict[str, Any]]):
    format = serializers.ChoiceField(choices=Export.Format.choices, default="sa1b")
    masks_as = serializers.ChoiceField(choices=list(exports.MASKS_AS), default="rle")
    shard_size = serializers.IntegerField(min_value=1, default=exports.DEFAULT_SHARD_SIZE)
    include_images = serializers.BooleanField(default=True)
    filters = serializers.DictField(required=False, default=dict)


class ExportViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
):
    """``POST`` starts an export job (202); the finished file is listed here until it
    expires (EXPORT_TTL_HOURS), then answers 404 and can be made again."""

    resource = "export"
    serializer_class = ExportSerializer
    filterset_fields = ["format"]

    def scoped_queryset(self) -> QuerySet[Export]:
        exports.purge_expired(self.get_project())
        return Export.objects.filter(project=self.get_project()).select_related("created_by")

    @extend_schema(request=ExportRequestSerializer, responses={202: JobSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not isinstance(request.data, dict):
            raise InvalidInput("send a JSON object")
        data = ExportRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = exports.enqueue(self.get_project(), dict(data.validated_data), user=request.user)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    def perform_destroy(self, instance: Export) -> None:
        exports.delete(instance)

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request: Request, project_pk: str, pk: str) -> FileResponse:
        export = self.get_object()
        if not exports.available(export):
            raise Http404("this export has expired or its file is gone; make it again")
        return FileResponse(
            export.file.open("rb"),
            as_attachment=True,
            filename=(export.file.name or "export").rsplit("/", 1)[-1],
        )


class ImportRequestSerializer(serializers.Serializer[dict[str, Any]]):
    format = serializers.ChoiceField(choices=Export.Format.choices)
    file = serializers.FileField(required=False)
    folder = serializers.CharField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("file" in attrs) == ("folder" in attrs):
            raise serializers.ValidationError("send either a file or a server folder")
        return attrs


class ImportViewSet(ProjectScopedMixin):
    """``POST`` an archive / JSON (multipart ``file``) or a server ``folder`` (under
    IMPORT_ROOTS) with ``format`` coco or sa1b: a 202 job. A bad archive is a 400 at once."""

    resource = "import"
    serializer_class = ImportRequestSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    def scoped_queryset(self) -> QuerySet[Any]:
        raise Http404

    @extend_schema(request=ImportRequestSerializer, responses={202: JobSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = ImportRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fmt = data.validated_data["format"]
        if "folder" in data.validated_data:
            job = imports.enqueue_folder(
                self.get_project(), data.validated_data["folder"], fmt, user=request.user
            )
        else:
            upload = data.validated_data["file"]
            job = imports.enqueue_upload(
                self.get_project(), upload, upload.name, fmt, user=request.user
            )
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

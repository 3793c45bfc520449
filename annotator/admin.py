from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from annotator import models
from engine import embeddings
from engine import exports as export_service
from engine.errors import EngineError
from engine.stages import automatic


class MembershipInline(admin.TabularInline[models.Membership, models.Project]):
    model = models.Membership
    extra = 1
    autocomplete_fields = ["user"]


class CategoryInline(admin.TabularInline[models.Category, models.Project]):
    model = models.Category
    extra = 1


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin[models.Project]):
    list_display = ["id", "name", "stage", "created_at"]
    list_filter = ["stage"]
    search_fields = ["name"]
    inlines = [MembershipInline, CategoryInline]
    actions = ["precompute_embeddings", "run_automatic_stage"]

    @admin.action(description="Precompute embeddings for the promoted model version")
    def precompute_embeddings(
        self, request: HttpRequest, queryset: QuerySet[models.Project]
    ) -> None:
        for project in queryset:
            try:
                job = embeddings.enqueue_precompute(project, user=request.user)
            except EngineError as exc:
                self.message_user(request, f"{project}: {exc.message}", messages.WARNING)
                continue
            self.message_user(
                request, f"{project}: embedding job {job.pk} queued", messages.SUCCESS
            )

    @admin.action(description="Run the automatic stage (promoted version, images not yet done)")
    def run_automatic_stage(self, request: HttpRequest, queryset: QuerySet[models.Project]) -> None:
        for project in queryset:
            try:
                job = automatic.enqueue(project, user=request.user)
            except EngineError as exc:
                self.message_user(request, f"{project}: {exc.message}", messages.WARNING)
                continue
            self.message_user(
                request, f"{project}: automatic-stage job {job.pk} queued", messages.SUCCESS
            )


@admin.register(models.Membership)
class MembershipAdmin(admin.ModelAdmin[models.Membership]):
    list_display = ["project", "user", "role"]
    list_filter = ["role"]


@admin.register(models.Category)
class CategoryAdmin(admin.ModelAdmin[models.Category]):
    list_display = ["name", "project", "supercategory"]
    search_fields = ["name"]


@admin.register(models.Image)
class ImageAdmin(admin.ModelAdmin[models.Image]):
    list_display = ["id", "file_name", "project", "width", "height", "state"]
    list_filter = ["state", "project"]
    search_fields = ["file_name", "sha256"]
    readonly_fields = ["sha256", "width", "height"]


@admin.register(models.Mask)
class MaskAdmin(admin.ModelAdmin[models.Mask]):
    list_display = ["id", "image", "category", "area", "source_stage", "review_state", "created_by"]
    list_filter = ["source_stage", "review_state"]
    raw_id_fields = ["image", "model_version"]


@admin.register(models.PromptLog)
class PromptLogAdmin(admin.ModelAdmin[models.PromptLog]):
    list_display = ["id", "image", "kind", "user", "session", "created_at"]
    list_filter = ["kind"]
    raw_id_fields = ["image", "mask"]


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin[models.ModelVersion]):
    list_display = ["project", "number", "state", "created_at"]
    list_filter = ["state"]


@admin.register(models.VerifierVersion)
class VerifierVersionAdmin(admin.ModelAdmin[models.VerifierVersion]):
    list_display = ["project", "number", "state", "target", "threshold", "created_at"]
    list_filter = ["state"]
    readonly_fields = ["verifier", "figures", "job", "last_decision"]


@admin.register(models.Job)
class JobAdmin(admin.ModelAdmin[models.Job]):
    list_display = ["id", "project", "kind", "state", "progress", "created_at", "finished_at"]
    list_filter = ["kind", "state"]
    readonly_fields = ["celery_id", "started_at", "finished_at"]


@admin.register(models.Export)
class ExportAdmin(admin.ModelAdmin[models.Export]):
    """Exports with a download link (served through the admin, for staff who may view
    exports); expired ones answer 404 as on the API."""

    list_display = ["id", "project", "format", "images", "masks", "size", "expires_at", "link"]
    list_filter = ["format"]
    readonly_fields = ["job", "params", "file", "size", "images", "masks", "expires_at", "link"]

    @admin.display(description="download")
    def link(self, export: models.Export) -> str:
        if not export_service.available(export):
            return "expired"
        url = reverse("admin:annotator_export_download", args=[export.pk])
        return format_html('<a href="{}">download</a>', url)

    def get_urls(self) -> list[URLPattern]:
        download = self.admin_site.admin_view(self.download)
        return [
            path("<int:pk>/download/", download, name="annotator_export_download"),
            *super().get_urls(),
        ]

    def download(self, request: HttpRequest, pk: int) -> FileResponse:
        export = get_object_or_404(models.Export, pk=pk)
        if not self.has_view_permission(request, export):
            raise PermissionDenied
        if not export_service.available(export):
            raise Http404("this export has expired or its file is gone; make it again")
        return FileResponse(
            export.file.open("rb"),
            as_attachment=True,
            filename=(export.file.name or "export").rsplit("/", 1)[-1],
        )

"""Server-rendered pages. Data for interactive pages comes from the REST API."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render

from annotator.api.views import visible_projects
from engine.projects import role_of, summary


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    projects = (
        visible_projects(request.user)
        .annotate(image_count=Count("images", distinct=True))
        .order_by("id")
    )
    rows = [(project, role_of(request.user, project)) for project in projects]
    return render(request, "frontend/project_list.html", {"rows": rows})


@login_required
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    project = get_object_or_404(visible_projects(request.user), pk=project_id)
    images = project.images.annotate(mask_count=Count("masks")).order_by("id")[:500]
    return render(
        request,
        "frontend/project_detail.html",
        {
            "project": project,
            "role": role_of(request.user, project),
            "images": images,
            "summary": summary(project),
            "categories": project.categories.all(),
        },
    )


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})

"""Server-rendered pages. Data for interactive pages comes from the REST API."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie

from annotator.api.permissions import allowed
from annotator.api.views import visible_projects
from annotator.models import Image, MaskSource, Project, Stage
from engine import assignment, review, verification
from engine.errors import EngineError
from engine.predictors import answering_version, version_key
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
    project_summary = summary(project)
    by_state = project_summary["images_by_state"]
    role = role_of(request.user, project)
    reviews = allowed("review", "next", role)
    verifies = allowed("verification", "next", role)
    return render(
        request,
        "frontend/project_detail.html",
        {
            "project": project,
            "role": role,
            "reviews": reviews,
            "to_review": review.pending_count(project) if reviews else 0,
            "verifies": verifies,
            "to_verify": _to_verify(project) if verifies else None,
            "images": images,
            "summary": project_summary,
            "to_do": sum(by_state.get(state, 0) for state in assignment.NEEDS_WORK),
            "categories": project.categories.all(),
        },
    )


def _to_verify(project: Project) -> int | None:
    """Masks and images waiting for verification; None when the project's sample setting is
    invalid (the verify page says why)."""
    try:
        return verification.mask_queue(project).count() + verification.image_queue(project).count()
    except EngineError:
        return None


@login_required
def annotate_next(request: HttpRequest, project_id: int) -> HttpResponse:
    """Lease the next image that needs work to this user and open it; a page saying so when
    every image is done (or held by other annotators)."""
    project = get_object_or_404(visible_projects(request.user), pk=project_id)
    image = assignment.next_image(project, request.user)
    if image is not None:
        return redirect("annotate-image", project_id=project.pk, image_id=image.pk)
    return render(
        request,
        "frontend/annotate_done.html",
        {"project": project, "summary": summary(project)},
    )


@login_required
@ensure_csrf_cookie  # the page's fetch calls send it back as X-CSRFToken
def annotate_image(request: HttpRequest, project_id: int, image_id: int) -> HttpResponse:
    """The annotation page of one image. Any member may open any image of the project (a
    reviewer checking, an admin fixing); the page warns when another annotator holds it."""
    project = get_object_or_404(visible_projects(request.user), pk=project_id)
    image = get_object_or_404(
        Image.objects.select_related("assigned_to"), project=project, pk=image_id
    )
    held_by = (
        image.assigned_to.get_username()
        if assignment.held_by_other(image, request.user) and image.assigned_to
        else None
    )
    version = answering_version(project)
    position = project.images.filter(pk__lte=image.pk).count()
    total = project.images.count()
    role = role_of(request.user, project)
    # ?edit=<mask id> opens that mask of the image for editing; with &review=1 (reviewers and
    # admins) saving it marks it fixed and goes back to the review page.
    edit = request.GET.get("edit", "")
    edit_id = int(edit) if edit.isdigit() else None
    reviewing = edit_id is not None and request.GET.get("review") == "1"
    review_url = (
        reverse("review-page", args=[project.pk])
        if reviewing and allowed("review", "next", role)
        else None
    )
    # &verify=1: the same, from the verify page (the mask stays to be verified there).
    verifying = (
        edit_id is not None
        and request.GET.get("verify") == "1"
        and allowed("verification", "next", role)
    )
    if verifying:
        review_url = reverse("verify-page", args=[project.pk])
    config = {
        "project": {"id": project.pk, "name": project.name, "stage": project.stage},
        "image": {
            "id": image.pk,
            "file_name": image.file_name,
            "width": image.width,
            "height": image.height,
            "state": image.state,
            "position": position,
            "total": total,
        },
        "user": {"username": request.user.get_username(), "role": role},
        "categories": [
            {"id": c.pk, "name": c.name, "color": c.color}
            for c in project.categories.order_by("id")
        ],
        "model": {"name": version_key(version), "version": version.pk if version else None},
        "held_by": held_by,
        "edit": edit_id,
        "review": {"mask": edit_id, "url": review_url} if review_url else None,
        "urls": {
            "api": f"/api/projects/{project.pk}/",
            "file": reverse("image-file", kwargs={"project_pk": project.pk, "pk": image.pk}),
            "socket": f"/ws/images/{image.pk}/annotate/",
            "project": reverse("project-detail", args=[project.pk]),
            "next": reverse("annotate-next", args=[project.pk]),
            # The page fills in {id} of the next image it is handed.
            "image_page": f"/projects/{project.pk}/images/{{id}}/annotate/",
        },
    }
    return render(
        request,
        "frontend/annotate.html",
        {
            "project": project,
            "image": image,
            "held_by": held_by,
            "config": config,
            # Where the review mode's back links lead, in words.
            "back_to": "verification" if verifying else "review",
        },
    )


@login_required
@ensure_csrf_cookie  # the page's fetch calls send it back as X-CSRFToken
def review_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """Review the masks the model made alone: one at a time, drawn at random, accepted,
    fixed on the annotation page, or rejected; with the quality figures per model version.
    Reviewers and admins; another member gets 403, a non-member 404."""
    project = get_object_or_404(visible_projects(request.user), pk=project_id)
    role = role_of(request.user, project)
    if not allowed("review", "next", role):
        raise PermissionDenied("Only the project's reviewers and admins review masks.")
    source = MaskSource.AUTOMATIC
    config = {
        "project": {"id": project.pk, "name": project.name, "stage": project.stage},
        "user": {"username": request.user.get_username(), "role": role},
        "source": source,
        "pending": review.pending_count(project, source=source),
        # What the SA paper measured on its automatic masks after correction (section 4).
        "reference": {"iou_above_0_90": 0.94, "iou_above_0_75": 0.97},
        "urls": {
            "api": f"/api/projects/{project.pk}/",
            "project": reverse("project-detail", args=[project.pk]),
            # The page fills in {image} and {mask}.
            "file": f"/api/projects/{project.pk}/images/{{image}}/file/",
            "fix": f"/projects/{project.pk}/images/{{image}}/annotate/?edit={{mask}}&review=1",
        },
    }
    return render(request, "frontend/review.html", {"project": project, "config": config})


@login_required
@ensure_csrf_cookie  # the page's fetch calls send it back as X-CSRFToken
def verify_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """Verification by people: the masks of the semi-automatic and automatic stages one at a
    time on their image, good or bad (or fixed on the annotation page); then each annotated
    image, is every object masked? Reviewers and admins; another member gets 403, a
    non-member 404."""
    project = get_object_or_404(visible_projects(request.user), pk=project_id)
    role = role_of(request.user, project)
    if not allowed("verification", "next", role):
        raise PermissionDenied("Only the project's reviewers and admins verify masks.")
    try:
        sample: float | None = verification.sample_fraction(project)
    except EngineError:
        sample = None  # the page shows the API's message
    mode = request.GET.get("mode", "mask")
    config = {
        "project": {"id": project.pk, "name": project.name, "stage": project.stage},
        "user": {"username": request.user.get_username(), "role": role},
        "mode": mode if mode in ("mask", "exhaustivity") else "mask",
        "sample": sample,
        "urls": {
            "api": f"/api/projects/{project.pk}/",
            "project": reverse("project-detail", args=[project.pk]),
            # The page fills in {image} and {mask}.
            "file": f"/api/projects/{project.pk}/images/{{image}}/file/",
            "fix": f"/projects/{project.pk}/images/{{image}}/annotate/?edit={{mask}}&verify=1",
            "annotate": f"/projects/{project.pk}/images/{{image}}/annotate/",
        },
    }
    return render(request, "frontend/verify.html", {"project": project, "config": config})


@login_required
@ensure_csrf_cookie  # the admin's buttons send it back as X-CSRFToken
def dashboard_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """Is the data engine working? Per stage and day the masks per image, seconds and clicks
    per mask; per model version its protocol figures and review agreement; the jobs. Any
    member; the stage selector and the retraining button only for the project's admins."""
    project = get_object_or_404(visible_projects(request.user), pk=project_id)
    role = role_of(request.user, project)
    config = {
        "project": {"id": project.pk, "name": project.name, "stage": project.stage},
        "user": {"username": request.user.get_username(), "role": role},
        "can": {
            "stage": allowed("project", "partial_update", role),
            "retrain": allowed("project", "retrain", role),
        },
        "stages": [{"value": value, "label": label} for value, label in Stage.choices],
        "sources": [{"value": value, "label": label} for value, label in MaskSource.choices],
        # What the SA paper reports per stage (section 4), beside the project's own figures.
        "reference": {
            "assisted": "44 per image · 14 s",
            "semi": "72 per image",
            "automatic": "~100 per image",
        },
        "urls": {
            "api": f"/api/projects/{project.pk}/",
            "socket": f"/ws/projects/{project.pk}/events/",
            "project": reverse("project-detail", args=[project.pk]),
        },
    }
    return render(request, "frontend/dashboard.html", {"project": project, "config": config})

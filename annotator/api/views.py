"""REST API views: parse and check the request, call the engine, shape the answer."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from annotator.api import serializers as s
from annotator.api.errors import engine_error_response
from annotator.api.permissions import REVIEW_STATE_ROLES, ProjectRolePermission
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
from engine import (
    assignment,
    dashboard,
    embeddings,
    jobs,
    masks,
    projects,
    retraining,
    review,
    verification,
    verifiers,
)
from engine import images as image_service
from engine.errors import Conflict, DuplicateImage, EngineError, InvalidInput
from engine.predictors import answering_version
from engine.stages import assisted, automatic, semi

logger = logging.getLogger(__name__)


def visible_projects(user: Any) -> QuerySet[Project]:
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


class ProjectScopedMixin(viewsets.GenericViewSet[Any]):
    """A view whose objects belong to one project, named in the URL."""

    resource: str
    project_kwarg = "project_pk"
    permission_classes = [ProjectRolePermission]
    lookup_value_regex = r"\d+"

    def get_project(self) -> Project:
        if not hasattr(self, "_project"):
            self._project = get_object_or_404(
                visible_projects(self.request.user), pk=self.kwargs[self.project_kwarg]
            )
        return self._project

    def project_role(self) -> str | None:
        return projects.role_of(self.request.user, self.get_project())

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no request user
            return self.get_serializer_class().Meta.model.objects.none()  # type: ignore[attr-defined]
        return self.scoped_queryset()

    def scoped_queryset(self) -> QuerySet[Any]:
        raise NotImplementedError

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        if self.project_kwarg in self.kwargs:
            context["project"] = self.get_project()
        return context


class ProjectViewSet(ProjectScopedMixin, viewsets.ModelViewSet[Project]):
    resource = "project"
    project_kwarg = "pk"
    serializer_class = s.ProjectSerializer
    filterset_fields = ["stage"]
    ordering_fields = ["id", "name", "created_at"]

    def scoped_queryset(self) -> QuerySet[Project]:
        return (
            visible_projects(self.request.user).annotate(image_count=Count("images")).order_by("id")
        )

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        user = self.request.user
        roles = dict(
            Membership.objects.filter(user_id=user.pk or 0).values_list("project_id", "role")
        )
        if user.is_superuser:
            roles = {
                pk: roles.get(pk, "admin") for pk in Project.objects.values_list("pk", flat=True)
            }
        context["roles"] = roles
        return context

    def perform_create(self, serializer: BaseSerializer[Project]) -> None:
        data = dict(serializer.validated_data)
        project = projects.create_project(
            data.pop("name"),
            owner=self.request.user,
            description=data.pop("description", ""),
            categories=data.pop("categories", []),
            settings=data.pop("settings", None),
        )
        for field, value in data.items():
            setattr(project, field, value)
        project.save()
        serializer.instance = (
            visible_projects(self.request.user)
            .annotate(image_count=Count("images"))
            .get(pk=project.pk)
        )

    def perform_update(self, serializer: BaseSerializer[Project]) -> None:
        serializer.validated_data.pop("categories", None)
        before = serializer.instance.stage if serializer.instance is not None else None
        project = serializer.save()
        if project.stage != before and project.stage == Stage.SEMI:
            semi.enqueue_prefill(project, user=self.request.user)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        counts = projects.delete_project(self.get_object())
        return Response({"deleted": counts})

    @action(detail=True, methods=["get"])
    def summary(self, request: Request, pk: str) -> Response:
        return Response(projects.summary(self.get_object()))

    @action(detail=True, methods=["get"])
    def dashboard(self, request: Request, pk: str) -> Response:
        """The data engine's figures: per stage and day (masks per image, seconds and clicks
        per mask), per model version (protocol figures, review agreement), recent jobs."""
        return Response(dashboard.dashboard(self.get_object()))

    @extend_schema(request=None, responses={202: s.JobSerializer})
    @action(detail=True, methods=["post"])
    def embeddings(self, request: Request, pk: str) -> Response:
        """Precompute the embeddings of every image for the promoted version (a gpu job)."""
        job = embeddings.enqueue_precompute(self.get_object(), user=request.user)
        return Response(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=s.AutomaticRequestSerializer, responses={202: s.JobSerializer})
    @action(detail=True, methods=["post"])
    def automatic(self, request: Request, pk: str) -> Response:
        """Run the fully automatic stage (a gpu job, in chunks): a model version labels the
        images alone. Body: ``version`` (default: the promoted one), ``images`` ("pending",
        "all" or a list of ids), ``preset`` ("fast" or "sa1b"), ``settings`` (generator
        parameters that replace the preset's, e.g. ``{"pred_iou_thresh": 0.7}``). Both
        default to the project's ``settings["automatic"]``."""
        body = s.AutomaticRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        job = automatic.enqueue(
            self.get_object(),
            version_id=data.get("version"),
            images=data.get("images", "pending"),
            preset=data.get("preset"),
            overrides=data.get("settings") or {},
            user=request.user,
        )
        return Response(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=s.RetrainRequestSerializer, responses={202: s.JobSerializer})
    @action(detail=True, methods=["post"])
    def retrain(self, request: Request, pk: str) -> Response:
        """Launch a retraining cycle (a gpu job): snapshot the accepted masks, train from the
        promoted version, evaluate, promote only a candidate better beyond the noise. The
        body may override the cycle's parameters (``steps``, ``metric``, ...)."""
        body = s.RetrainRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = retraining.enqueue(
            self.get_object(), overrides=body.validated_data.get("params"), user=request.user
        )
        return Response(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class MembershipViewSet(ProjectScopedMixin, viewsets.ModelViewSet[Membership]):
    resource = "member"
    serializer_class = s.MembershipSerializer
    filterset_fields = ["role"]

    def scoped_queryset(self) -> QuerySet[Membership]:
        return Membership.objects.filter(project=self.get_project()).select_related("user")

    def perform_create(self, serializer: BaseSerializer[Membership]) -> None:
        user = serializer.validated_data["user"]
        if Membership.objects.filter(project=self.get_project(), user=user).exists():
            raise InvalidInput(f"{user} is already a member of this project")
        serializer.save(project=self.get_project())

    def perform_update(self, serializer: BaseSerializer[Membership]) -> None:
        membership = serializer.instance
        assert membership is not None
        if serializer.validated_data.get("user", membership.user) != membership.user:
            raise InvalidInput("a membership's user cannot be changed; add a new member")
        projects.change_role(membership, serializer.validated_data.get("role", membership.role))

    def perform_destroy(self, instance: Membership) -> None:
        projects.remove_member(instance)


class CategoryViewSet(ProjectScopedMixin, viewsets.ModelViewSet[Category]):
    resource = "category"
    serializer_class = s.CategorySerializer
    filterset_fields = ["name", "supercategory"]

    def scoped_queryset(self) -> QuerySet[Category]:
        return Category.objects.filter(project=self.get_project())

    def perform_create(self, serializer: BaseSerializer[Category]) -> None:
        serializer.save(project=self.get_project())

    def perform_destroy(self, instance: Category) -> None:
        if instance.masks.exists():
            raise InvalidInput(
                f"category {instance.name!r} is used by {instance.masks.count()} masks; "
                "change them first"
            )
        instance.delete()


class ImageViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
):
    resource = "image"
    serializer_class = s.ImageSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    filterset_fields = ["state", "sha256", "file_name"]
    ordering_fields = ["id", "file_name", "created_at"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def scoped_queryset(self) -> QuerySet[Image]:
        return (
            Image.objects.filter(project=self.get_project())
            .annotate(mask_count=Count("masks"))
            .order_by("id")
        )

    @extend_schema(request=s.ImageUploadSerializer, responses={201: s.ImageSerializer(many=True)})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Upload one or many images (multipart field ``files``). Every file is checked before
        any is stored: one bad file refuses the whole upload. Duplicates are reported."""
        upload = s.ImageUploadSerializer(data={"files": request.FILES.getlist("files")})
        upload.is_valid(raise_exception=True)
        prepared, errors = [], []
        for uploaded in upload.validated_data["files"]:
            try:
                prepared.append(image_service.prepare(uploaded.read(), uploaded.name))
            except EngineError as exc:
                errors.append(exc)
        if errors:
            return _refusal(errors)
        created: list[Image] = []
        duplicates: list[dict[str, Any]] = []
        with transaction.atomic():
            for item in prepared:
                try:
                    created.append(image_service.store(self.get_project(), item, user=request.user))
                except DuplicateImage as exc:
                    duplicates.append({"file_name": item.file_name, **exc.detail})
        _embed_soon(self.get_project(), created)
        semi.on_new_images(self.get_project(), created, user=request.user)
        if not created:
            return Response(
                {
                    "error": "duplicate_image",
                    "detail": "every file is already in the project",
                    "duplicates": duplicates,
                },
                status=status.HTTP_409_CONFLICT,
            )
        body = s.ImageSerializer(
            self.get_queryset().filter(pk__in=[i.pk for i in created]), many=True
        )
        return Response(
            {"created": body.data, "duplicates": duplicates}, status=status.HTTP_201_CREATED
        )

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        unknown = set(request.data) - {"state"}
        if unknown:
            raise InvalidInput(f"only 'state' can be changed, not {sorted(unknown)}")
        return super().partial_update(request, *args, **kwargs)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        image = self.get_object()
        counts = projects.delete_images(Image.objects.filter(pk=image.pk))
        return Response({"deleted": counts})

    @extend_schema(responses={(200, "image/*"): bytes})
    @action(detail=True, methods=["get"])
    def file(self, request: Request, project_pk: str, pk: str) -> FileResponse:
        """The image's pixels (``?original=1`` for the upload as it came)."""
        image = self.get_object()
        field = (
            image.original
            if request.query_params.get("original") and image.original
            else image.file
        )
        response = FileResponse(field.open("rb"), filename=image.file_name.rsplit("/", 1)[-1])
        response["Cache-Control"] = "private, max-age=3600"
        return response

    @extend_schema(request=s.NextImageSerializer, responses={200: s.ImageSerializer, 204: None})
    @action(detail=False, methods=["post"])
    def next(self, request: Request, project_pk: str) -> Response:
        """Lease the next image that needs work (204 when none is left)."""
        data = s.NextImageSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        image = assignment.next_image(
            self.get_project(), request.user, after=data.validated_data.get("after")
        )
        if image is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(self.get_serializer(self.get_queryset().get(pk=image.pk)).data)

    @extend_schema(request=None, responses={200: s.ImageSerializer})
    @action(detail=True, methods=["post", "delete"])
    def lease(self, request: Request, project_pk: str, pk: str) -> Response:
        """POST keeps the image while its annotation page is open (409, naming the holder,
        when another holds it); DELETE gives it back (only the holder's lease goes)."""
        image = self.get_object()
        if request.method == "DELETE":
            assignment.give_back(image, request.user)
        elif not assignment.renew(image, request.user):
            holder = Image.objects.filter(pk=image.pk).values_list(
                "assigned_to__username", flat=True
            )
            raise Conflict(
                f"image {image.pk} is being annotated by {holder[0]}", assigned_to=holder[0]
            )
        return Response(self.get_serializer(self.get_queryset().get(pk=image.pk)).data)

    @extend_schema(request=s.PredictSerializer, responses={200: dict})
    @action(detail=True, methods=["post"])
    def predict(self, request: Request, project_pk: str, pk: str) -> Response:
        """Candidate masks for points and / or a box, as the annotation websocket answers
        (stateless: no ``mask_input`` handles)."""
        image = self.get_object()
        body = request.data
        if not isinstance(body, dict):
            raise InvalidInput("send a JSON object")
        if body.get("mask_input") is not None:
            raise InvalidInput("mask_input handles exist only on the annotation websocket")
        prompt = assisted.parse_prompt(body, image)
        session = assisted.open_session(image, answering_version(image.project))
        answer = session.predict(prompt)
        return Response(
            {
                "model": session.model_name,
                "embedding": session.embedding_source,
                "size": [image.height, image.width],
                **answer.as_dict(),
                "hq": session.supports_hq,
            }
        )

    @extend_schema(request=s.ImportFolderSerializer, responses={202: s.JobSerializer})
    @action(detail=False, methods=["post"], url_path="import-folder")
    def import_folder(self, request: Request, project_pk: str) -> Response:
        """Import a folder on the server (under IMPORT_ROOTS) as a background job."""
        data = s.ImportFolderSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        from engine.importing import check_import_root

        folder = check_import_root(data.validated_data["folder"])
        job = jobs.enqueue(
            self.get_project(),
            "import_folder",
            key=str(folder),
            params={"folder": str(folder)},
            user=request.user,
        )
        return Response(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


def _embed_soon(project: Project, created: list[Image]) -> None:
    """Queue the new images' embeddings on the gpu queue, once the upload has committed."""
    version = answering_version(project)
    if version is None or not created:
        return
    from engine.tasks import embed_image

    ids = [image.pk for image in created]

    def send() -> None:
        for image_id in ids:
            try:
                embed_image.apply_async(args=(image_id, version.pk))
            except Exception:  # the embedding is computed on first open instead
                logger.exception("could not queue the embedding of image %s", image_id)

    transaction.on_commit(send)


def _refusal(errors: list[EngineError]) -> Response:
    codes = {exc.status_code for exc in errors}
    code = codes.pop() if len(codes) == 1 else 400
    if len(errors) == 1:
        response = engine_error_response(errors[0])
        response.data["stored"] = 0
        return response
    return Response(
        {
            "error": "invalid_upload",
            "detail": f"{len(errors)} files were refused; nothing was stored",
            "files": [{"error": e.code, "detail": e.message, **e.detail} for e in errors],
            "stored": 0,
        },
        status=code,
    )


class MaskViewSet(ProjectScopedMixin, viewsets.ModelViewSet[Mask]):
    resource = "mask"
    serializer_class = s.MaskSerializer
    filterset_fields = [
        "image",
        "category",
        "review_state",
        "verification_state",
        "source_stage",
        "model_version",
    ]
    ordering_fields = ["id", "area", "created_at", "predicted_iou"]

    def scoped_queryset(self) -> QuerySet[Mask]:
        return Mask.objects.filter(image__project=self.get_project()).select_related(
            "image", "created_by", "updated_by"
        )

    def _image(self, image_id: int) -> Image:
        image = Image.objects.filter(project=self.get_project(), pk=image_id).first()
        if image is None:
            raise InvalidInput(f"image {image_id} is not an image of this project")
        return image

    def _check_review_change(self, data: dict[str, Any], current: str | None) -> None:
        wanted = data.get("review_state")
        if (
            wanted is not None
            and wanted != current
            and self.project_role() not in REVIEW_STATE_ROLES
        ):
            raise PermissionDenied("only reviewers and admins change a mask's review state")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = _engine_fields(serializer.validated_data)
        self._check_review_change(data, Mask.ReviewState.PENDING)
        mask = masks.create_mask(self._image(data.pop("image")), data, user=request.user)
        return Response(self.get_serializer(mask).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        mask = self.get_object()
        serializer = self.get_serializer(mask, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = _engine_fields(serializer.validated_data)
        if data.get("image", mask.image_id) != mask.image_id:
            raise InvalidInput("a mask cannot move to another image")
        self._check_review_change(data, mask.review_state)
        try:
            mask = masks.update_mask(mask, data, user=request.user)
        except EngineError as exc:
            response = engine_error_response(exc)
            if exc.status_code == status.HTTP_409_CONFLICT:
                response.data["current"] = self.get_serializer(Mask.objects.get(pk=mask.pk)).data
            return response
        return Response(self.get_serializer(mask).data)


def _engine_fields(validated: dict[str, Any]) -> dict[str, Any]:
    """Serializer output keyed as the engine expects (ids, not objects)."""
    renames = {"image_id": "image", "category_id": "category", "model_version_id": "model_version"}
    return {renames.get(key, key): value for key, value in validated.items()}


class ReviewViewSet(ProjectScopedMixin):
    """What to review next, and how good the reviewed model-made masks were."""

    resource = "review"
    queryset = Mask.objects.none()
    serializer_class = s.MaskSerializer

    def scoped_queryset(self) -> QuerySet[Mask]:
        return Mask.objects.none()

    @extend_schema(
        parameters=[
            OpenApiParameter("version", int, description="model version id (default: any)"),
            OpenApiParameter("source", str, description="automatic (default) or semi"),
            OpenApiParameter("exclude", str, description="comma-separated mask ids skipped"),
        ],
        responses={200: s.MaskSerializer, 204: None},
    )
    @action(detail=False, methods=["get"])
    def next(self, request: Request, project_pk: str) -> Response:
        """A pending model-made mask drawn at random (204 when none is left)."""
        params = request.query_params
        try:
            version = int(params["version"]) if params.get("version") else None
            exclude = [int(i) for i in params.get("exclude", "").split(",") if i.strip()]
        except ValueError:
            raise InvalidInput("version and exclude take mask and version ids") from None
        mask = review.next_to_review(
            self.get_project(),
            version_id=version,
            source=params.get("source", "automatic"),
            exclude=exclude,
        )
        if mask is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(self.get_serializer(mask).data)

    @extend_schema(
        parameters=[OpenApiParameter("source", str, description="automatic (default) or semi")]
    )
    @action(detail=False, methods=["get"])
    def quality(self, request: Request, project_pk: str) -> Response:
        """Per model version: reviewed, accepted, fixed, rejected, and the shares of kept
        masks whose IoU before vs after correction is above 0.90 and 0.75."""
        source = request.query_params.get("source", "automatic")
        return Response(review.quality(self.get_project(), source=source))


class VerificationViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
):
    """Verification by people: the next mask or image to check, the decisions, the figures,
    and what was sent back to the annotators of an image (engine/verification.py)."""

    resource = "verification"
    serializer_class = s.VerificationDecisionSerializer
    filterset_fields = ["kind", "verdict", "image", "mask", "user"]
    ordering_fields = ["id", "created_at", "seconds"]

    def scoped_queryset(self) -> QuerySet[VerificationDecision]:
        return VerificationDecision.objects.filter(project=self.get_project()).select_related(
            "user", "image"
        )

    @extend_schema(
        request=s.VerificationRequestSerializer, responses={201: s.VerificationDecisionSerializer}
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Record a decision: ``{"kind": "mask", "mask": id, "verdict": "good" | "bad"}`` or
        ``{"kind": "exhaustivity", "image": id, "verdict": "yes" | "no", "points": [[x, y]]}``,
        with the ``seconds`` the page measured. A bad mask is rejected and its image sent back
        to annotation; "yes" marks the image complete, "no" sends it back with the points."""
        body = s.VerificationRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        common = {"user": request.user, "seconds": data["seconds"], "note": data["note"]}
        if data["kind"] == VerificationDecision.Kind.MASK:
            decision = verification.verify_mask(
                self.get_project(), data["mask"], data["verdict"], **common
            )
        else:
            decision = verification.check_image(
                self.get_project(),
                data["image"],
                data["verdict"],
                points=data.get("points", []),
                **common,
            )
        decision = self.get_queryset().get(pk=decision.pk)
        return Response(self.get_serializer(decision).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, description="mask (default) or exhaustivity"),
            OpenApiParameter("exclude", str, description="comma-separated ids skipped"),
            OpenApiParameter("image", int, description="masks: prefer this image's"),
        ],
        responses={200: dict, 204: None},
    )
    @action(detail=False, methods=["get"])
    def next(self, request: Request, project_pk: str) -> Response:
        """The next mask to verify with its image, or the next annotated image to check for
        missed objects with its kept masks (204 when none is left)."""
        params = request.query_params
        kind = params.get("kind", VerificationDecision.Kind.MASK)
        try:
            exclude = [int(i) for i in params.get("exclude", "").split(",") if i.strip()]
            image_id = int(params["image"]) if params.get("image") else None
        except ValueError:
            raise InvalidInput("exclude and image take ids") from None
        project = self.get_project()
        context = self.get_serializer_context()
        if kind == VerificationDecision.Kind.MASK:
            mask = verification.next_mask(project, exclude=exclude, image_id=image_id)
            if mask is None:
                return Response(status=status.HTTP_204_NO_CONTENT)
            image = mask.image
            body: dict[str, Any] = {"kind": kind, "mask": s.MaskSerializer(mask).data}
        elif kind == VerificationDecision.Kind.EXHAUSTIVITY:
            found = verification.next_image(project, exclude=exclude)
            if found is None:
                return Response(status=status.HTTP_204_NO_CONTENT)
            image = found
            kept = verification.kept_masks(image).select_related(
                "image", "created_by", "updated_by"
            )
            body = {"kind": kind, "masks": s.MaskSerializer(kept, many=True).data}
        else:
            raise InvalidInput(f"kind must be one of {list(VerificationDecision.Kind.values)}")
        image_row = Image.objects.annotate(mask_count=Count("masks")).get(pk=image.pk)
        body["image"] = s.ImageSerializer(image_row, context=context).data
        return Response(body)

    @extend_schema(responses={200: dict})
    @action(detail=False, methods=["get"])
    def summary(self, request: Request, project_pk: str) -> Response:
        """Masks pending / good / bad, images pending / waiting / complete / sent back, and
        the reviewers' mean seconds per mask and per image."""
        return Response(verification.summary(self.get_project()))

    @extend_schema(
        parameters=[OpenApiParameter("image", int, required=True)], responses={200: dict}
    )
    @action(detail=False, methods=["get"])
    def feedback(self, request: Request, project_pk: str) -> Response:
        """What verification sent back on an image: its masks verified bad and the places of
        its last failed exhaustivity check (any member: the annotation page shows them)."""
        raw = request.query_params.get("image", "")
        if not raw.isdigit():
            raise InvalidInput("image takes an image id")
        image = Image.objects.filter(project=self.get_project(), pk=int(raw)).first()
        if image is None:
            raise Http404("no such image in this project")
        return Response(verification.feedback(image))


class VerifierViewSet(ProjectScopedMixin, viewsets.ReadOnlyModelViewSet[VerifierVersion]):
    """The project's learned verifier (engine/verifiers.py): its versions with the figures
    that promoted or rejected each, training one, its summary, and demoting it by hand."""

    resource = "verifier"
    serializer_class = s.VerifierVersionSerializer
    filterset_fields = ["state"]

    def scoped_queryset(self) -> QuerySet[VerifierVersion]:
        return VerifierVersion.objects.filter(project=self.get_project()).select_related(
            "model_version", "created_by"
        )

    @extend_schema(request=None, responses={202: s.JobSerializer})
    @action(detail=False, methods=["post"])
    def train(self, request: Request, project_pk: str) -> Response:
        """Train a verifier on the project's mask verdicts (a cpu job). It is promoted only
        if, on held-out verdicts, it accepts more masks than SA-1B's fixed filters at the
        project's target precision. 400 with the counts when there are too few verdicts."""
        job = verifiers.enqueue(self.get_project(), user=request.user)
        return Response(s.JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: dict})
    @action(detail=False, methods=["get"])
    def summary(self, request: Request, project_pk: str) -> Response:
        """The settings (target, audit), the verdicts training would use, and the promoted
        version's calls, audit agreement and masks not scored yet."""
        return Response(verifiers.summary(self.get_project()))

    @extend_schema(request=None, responses={200: s.VerifierVersionSerializer})
    @action(detail=True, methods=["post"])
    def demote(self, request: Request, project_pk: str, pk: str) -> Response:
        """Stop the promoted version deciding: people see every mask again, and the masks it
        accepted alone go back to the queue (409 for a version not promoted)."""
        version = verifiers.demote(
            self.get_object(), reason=f"demoted by {request.user.get_username()}"
        )
        return Response(self.get_serializer(version).data)


class PromptLogViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
):
    resource = "prompt_log"
    serializer_class = s.PromptLogSerializer
    filterset_fields = ["image", "mask", "session", "kind"]

    def scoped_queryset(self) -> QuerySet[PromptLog]:
        return PromptLog.objects.filter(image__project=self.get_project()).select_related("user")

    def perform_create(self, serializer: BaseSerializer[PromptLog]) -> None:
        image_id = serializer.validated_data.pop("image_id")
        image = Image.objects.filter(project=self.get_project(), pk=image_id).first()
        if image is None:
            raise InvalidInput(f"image {image_id} is not an image of this project")
        serializer.save(image=image, user=self.request.user)


class JobViewSet(ProjectScopedMixin, viewsets.ReadOnlyModelViewSet[Job]):
    resource = "job"
    serializer_class = s.JobSerializer
    filterset_fields = ["kind", "state"]

    def scoped_queryset(self) -> QuerySet[Job]:
        return Job.objects.filter(project=self.get_project()).select_related("created_by")

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, project_pk: str, pk: str) -> Response:
        job = self.get_object()
        if not jobs.cancel(job):
            return Response(
                {"error": "not_active", "detail": f"job {job.pk} is already {job.state}"},
                status=status.HTTP_409_CONFLICT,
            )
        job.refresh_from_db()
        return Response(s.JobSerializer(job).data)


class ModelVersionViewSet(ProjectScopedMixin, viewsets.ReadOnlyModelViewSet[ModelVersion]):
    resource = "model_version"
    serializer_class = s.ModelVersionSerializer
    filterset_fields = ["state"]

    def scoped_queryset(self) -> QuerySet[ModelVersion]:
        return ModelVersion.objects.filter(project=self.get_project())

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request: Request, project_pk: str, pk: str) -> FileResponse:
        version = self.get_object()
        if not version.checkpoint:
            raise Http404("this version has no checkpoint file")
        return FileResponse(
            version.checkpoint.open("rb"),
            as_attachment=True,
            filename=f"project{version.project_id}-v{version.number}.pth",
        )

    @action(detail=True, methods=["post"])
    def promote(self, request: Request, project_pk: str, pk: str) -> Response:
        from engine import versions

        version = versions.promote(self.get_object())
        return Response(self.get_serializer(version).data)

    @action(detail=True, methods=["post"])
    def reject(self, request: Request, project_pk: str, pk: str) -> Response:
        from engine import versions

        version = versions.reject(self.get_object())
        return Response(self.get_serializer(version).data)


class MeView(viewsets.ViewSet):
    @extend_schema(responses={200: dict})
    def list(self, request: Request) -> Response:
        user = request.user
        return Response(
            {
                "id": user.pk,
                "username": user.get_username(),
                "is_superuser": user.is_superuser,
                "projects": dict(
                    Membership.objects.filter(user_id=user.pk or 0).values_list(
                        "project_id", "role"
                    )
                ),
            }
        )

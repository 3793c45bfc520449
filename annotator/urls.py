from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token
from rest_framework.routers import DefaultRouter

from annotator.api import exports, views

router = DefaultRouter()
router.register("projects", views.ProjectViewSet, basename="project")
nested = {
    "members": (views.MembershipViewSet, "member"),
    "categories": (views.CategoryViewSet, "category"),
    "images": (views.ImageViewSet, "image"),
    "masks": (views.MaskViewSet, "mask"),
    "prompt-logs": (views.PromptLogViewSet, "prompt-log"),
    "jobs": (views.JobViewSet, "job"),
    "model-versions": (views.ModelVersionViewSet, "model-version"),
    "exports": (exports.ExportViewSet, "export"),
    "imports": (exports.ImportViewSet, "import"),
    "review": (views.ReviewViewSet, "review"),
    "verification": (views.VerificationViewSet, "verification"),
    "verifier": (views.VerifierViewSet, "verifier"),
}
for prefix, (viewset, basename) in nested.items():
    router.register(rf"projects/(?P<project_pk>\d+)/{prefix}", viewset, basename=basename)
router.register("me", views.MeView, basename="me")

urlpatterns = [
    path("api/", include(router.urls)),
    path("api/auth/token/", obtain_auth_token, name="api-token"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("admin/", admin.site.urls),
    path("", include("frontend.urls")),
]

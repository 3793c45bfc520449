from django.contrib.auth import views as auth_views
from django.urls import path

from frontend import views

urlpatterns = [
    path("", views.project_list, name="project-list"),
    path("projects/<int:project_id>/", views.project_detail, name="project-detail"),
    path("projects/<int:project_id>/annotate/", views.annotate_next, name="annotate-next"),
    path(
        "projects/<int:project_id>/images/<int:image_id>/annotate/",
        views.annotate_image,
        name="annotate-image",
    ),
    path("projects/<int:project_id>/review/", views.review_page, name="review-page"),
    path("projects/<int:project_id>/verify/", views.verify_page, name="verify-page"),
    path("projects/<int:project_id>/dashboard/", views.dashboard_page, name="dashboard-page"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="frontend/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]

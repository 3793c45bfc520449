"""The manage.py commands an admin scripts with."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from annotator.models import Image, Membership, Project
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db


def run(*args: Any) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_project_add_member_and_set_stage(users: Any) -> None:
    out, _ = run("create_project", "Cells", "--owner", "admin", "--category", "nucleus")
    project = Project.objects.get(pk=int(out.strip()))
    assert project.categories.get().name == "nucleus"
    run("add_member", "Cells", "annotator", "annotator")
    assert Membership.objects.get(project=project, user=users["annotator"]).role == "annotator"
    run("add_member", str(project.pk), "annotator", "reviewer")
    assert Membership.objects.get(project=project, user=users["annotator"]).role == "reviewer"
    run("set_stage", "Cells", "semi")
    project.refresh_from_db()
    assert project.stage == "semi"
    with pytest.raises(CommandError, match="no user"):
        run("add_member", "Cells", "ghost", "annotator")
    with pytest.raises(CommandError, match="at least one admin"):
        run("add_member", "Cells", "admin", "annotator")


def test_import_images_walks_the_folder_and_reports(tmp_path: Path, project_factory: Any) -> None:
    project = project_factory()
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.png").write_bytes(png_bytes(seed=1))
    (folder / "sub" / "two.png").write_bytes(png_bytes(seed=2))
    (folder / "sub" / "bad.jpg").write_bytes(b"garbage")
    out, err = run("import_images", str(project.pk), str(folder))
    assert "2 imported, 0 already present, 1 refused" in out
    assert "sub/bad.jpg" in err
    out, _ = run("import_images", str(project.pk), str(folder))
    assert "0 imported, 2 already present, 1 refused" in out
    assert Image.objects.filter(project=project).count() == 2


def test_import_images_does_not_follow_links_out_of_the_folder(
    tmp_path: Path, project_factory: Any
) -> None:
    project = project_factory()
    outside = tmp_path / "outside"
    inside = tmp_path / "inside"
    outside.mkdir()
    inside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes(seed=5))
    (inside / "link.png").symlink_to(outside / "secret.png")
    out, _ = run("import_images", str(project.pk), str(inside))
    assert "0 imported" in out


def test_setup_demo_is_idempotent() -> None:
    out, _ = run("setup_demo", "--password", "demo-pass-123")
    assert "Log in as admin / demo-pass-123" in out
    project = Project.objects.get(name__startswith="Demo")
    count = project.images.count()
    assert count >= 6
    out, _ = run("setup_demo")
    assert "password unchanged" in out
    assert project.images.count() == count


def test_add_model_version_checks_and_promotes(tmp_path: Path, project_factory: Any) -> None:
    import torch

    from model.build import build_sam
    from model.checkpoints import save_checkpoint

    project = project_factory()
    ours = save_checkpoint(
        tmp_path / "ours.pt", build_sam("vit_tiny_test"), {"name": "vit_tiny_test"}
    )
    out, _ = run("add_model_version", str(project.pk), str(ours), "--promote")
    assert "v0 (promoted)" in out
    official = tmp_path / "official.pth"
    torch.save(build_sam("vit_tiny_test").state_dict(), official)
    with pytest.raises(CommandError, match="unknown configuration"):
        run("add_model_version", str(project.pk), str(official))
    with pytest.raises(CommandError, match="does not fit vit_b"):
        run("add_model_version", str(project.pk), str(official), "--config", "vit_b")
    out, _ = run("add_model_version", str(project.pk), str(official), "--config", "vit_tiny_test")
    assert "v1 (candidate)" in out
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(CommandError, match="not a readable checkpoint"):
        run("add_model_version", str(project.pk), str(tmp_path / "junk.pth"))
    assert project.promoted_version().number == 0
    assert project.model_versions.get(number=1).parent == project.promoted_version()

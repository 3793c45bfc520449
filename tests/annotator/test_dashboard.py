"""The dashboard's figures: per stage, per day, per model version, and the jobs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from annotator.models import Job, Mask, ModelVersion
from engine import images, rle
from tests.conftest import png_bytes

pytestmark = pytest.mark.django_db


def add(image: Any, source: str, *, seconds: float = 0.0, clicks: int = 0, **fields: Any) -> Mask:
    mask = np.zeros((image.height, image.width), dtype=bool)
    mask[2:8, 2:8] = True
    encoded = rle.from_mask(mask)
    return Mask.objects.create(
        image=image,
        rle_counts=encoded.counts,
        bbox=rle.bbox(encoded),
        area=rle.area(encoded),
        source_stage=source,
        seconds_spent=seconds,
        clicks=clicks,
        **fields,
    )


def test_the_dashboard_reports_stages_versions_and_jobs(
    project_factory: Any, users: Any, client_for: Any
) -> None:
    project = project_factory("Dash")
    first, second = (
        images.store(project, images.prepare(png_bytes(20, 10, seed=s), f"{s}.png")) for s in (1, 2)
    )
    add(first, "assisted", seconds=30, clicks=3)
    add(first, "assisted", seconds=10, clicks=1)
    add(second, "assisted", seconds=20, clicks=5)
    add(second, "assisted")  # saved without timing (e.g. over the API): not averaged
    starter = ModelVersion.objects.create(
        project=project, number=0, state="retired", metrics={"davis345": {"noc@85": 9.5}}
    )
    cycle = {
        "metric": "noc@85",
        "candidate": {"noc@85": 7.0, "miou@1": 0.7},
        "baseline": {"noc@85": 9.0, "miou@1": 0.6},
        "baseline_name": "v0",
        "gain": 2.0,
        "interval": [0.5, 3.5],
        "better": True,
    }
    v1 = ModelVersion.objects.create(
        project=project, number=1, state="promoted", parent=starter, metrics={"cycle": cycle}
    )
    for state in ("accepted", "rejected", "pending"):
        add(second, "automatic", model_version=v1, review_state=state)
    Job.objects.create(project=project, kind="export", state="succeeded")
    running = Job.objects.create(project=project, kind="retrain", state="running", progress=0.5)

    response = client_for(users["annotator"]).get(f"/api/projects/{project.pk}/dashboard/")
    assert response.status_code == 200
    data = response.data
    stages = {row["stage"]: row for row in data["per_stage"]}
    assert stages["assisted"] == {
        "stage": "assisted",
        "masks": 4,
        "images": 2,
        "masks_per_image": 2.0,
        "seconds_per_mask": 20.0,
        "clicks_per_mask": 3.0,
    }
    assert stages["automatic"]["masks"] == 3 and stages["automatic"]["seconds_per_mask"] is None
    (today,) = {row["day"] for row in data["daily"]}
    assert sum(row["masks"] for row in data["daily"]) == 7
    versions = {row["version"]: row for row in data["versions"]}
    assert versions[0]["shipped_figures"] == {"davis345": {"noc@85": 9.5}}
    assert versions[1]["figures"]["noc@85"] == 7.0 and versions[1]["compared_with"] == "v0"
    assert versions[1]["parent"] == 0 and versions[1]["interval"] == [0.5, 3.5]
    assert versions[1]["review"]["accepted"] == 1 and versions[1]["review"]["share_rejected"] == 0.5
    assert data["jobs"][0]["id"] == running.pk  # running jobs first
    assert len(data["jobs"]) == 2

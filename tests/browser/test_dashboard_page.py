"""The dashboard page in Debian's Chromium, against the platform as the README starts it (but
without its worker, so that the jobs launched here stay queued and nothing trains): masks of
the three stages over three days and three model versions with their figures, written
straight into the served platform's database; the tables' numbers, the SVG charts' series and
points, an admin changing the stage and launching a retraining cycle (twice: the second is
refused while the first waits), an annotator without the admin controls, and a new project's
empty page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from tests.browser.conftest import screenshot
from tests.browser.helpers import collect_errors, database, log_in
from tests.served import Served, serve_platform

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT_MS = 30_000

# Run in the served platform's own database (manage.py shell). Masks of the demo project,
# dated: two days ago 4 assisted masks on 2 images (30+20+10+40 s, 3+2+1+4 clicks); yesterday
# 3 assisted on 1 image (12+15+18 s, 2 clicks each) and, on another image, 4 masks the model
# pre-filled (semi, no timing) with 2 anna added (8+10 s, 1 click each); today 8 automatic
# masks of v1 on 2 images, 2 accepted and 1 rejected by a reviewer. Versions: v0 (retired,
# shipped figures on two sets), v1 (promoted, beat v0), v2 (rejected, did not beat v1).
SETUP = """
import json
from datetime import datetime, time, timedelta, timezone as tz
import numpy as np
from django.contrib.auth import get_user_model
from django.utils import timezone
from annotator.models import Job, Mask, Membership, ModelVersion, Project
from engine import rle
from engine.projects import create_project

User = get_user_model()
project = Project.objects.get(pk=1)
admin = User.objects.get(username="admin")
anna = User.objects.create_user("anna", password="pw-anna")
Membership.objects.create(project=project, user=anna, role="annotator")
images = list(project.images.order_by("id"))
today = timezone.now().date()

def add(image, n, stage, days_ago, *, seconds=0.0, clicks=0, user=None, version=None,
        review="pending"):
    pixels = np.zeros((image.height, image.width), dtype=bool)
    pixels[10 + 12 * n : 20 + 12 * n, 10:40] = True
    encoded = rle.from_mask(pixels)
    mask = Mask.objects.create(
        image=image, rle_counts=encoded.counts, bbox=rle.bbox(encoded), area=rle.area(encoded),
        source_stage=stage, seconds_spent=seconds, clicks=clicks, created_by=user,
        model_version=version, review_state=review,
    )
    day = today - timedelta(days=days_ago)
    Mask.objects.filter(pk=mask.pk).update(created_at=datetime.combine(day, time(12), tz.utc))

def cycle(candidate, baseline, name, gain, interval):
    keys = ["miou@1", "miou@3", "miou@5", "noc@85", "noc@90"]
    return {"cycle": {
        "metric": "noc@85", "candidate": dict(zip(keys, candidate)),
        "baseline": dict(zip(keys, baseline)), "baseline_name": name, "gain": gain,
        "interval": interval, "better": interval[0] > 0,
    }}

for n, (s, c) in enumerate([(30, 3), (20, 2), (10, 1)]):
    add(images[0], n, "assisted", 2, seconds=s, clicks=c, user=anna)
add(images[1], 0, "assisted", 2, seconds=40, clicks=4, user=anna)
for n, s in enumerate([12, 15, 18]):
    add(images[2], n, "assisted", 1, seconds=s, clicks=2, user=anna)
v0 = ModelVersion.objects.create(project=project, number=0, state="retired", metrics={
    "davis345": {"miou@1": 0.61, "miou@3": 0.74, "miou@5": 0.8, "noc@85": 8.5, "noc@90": 11.2},
    "weizmann-horse326": {"miou@1": 0.66, "miou@3": 0.78, "miou@5": 0.83, "noc@85": 6.1,
                          "noc@90": 9.4},
})
v1 = ModelVersion.objects.create(
    project=project, number=1, state="promoted", parent=v0,
    metrics=cycle([0.68, 0.79, 0.84, 6.9, 9.8], [0.62, 0.75, 0.8, 8.1, 11.0], "v0", 1.2,
                  [0.4, 2.1]),
)
ModelVersion.objects.create(
    project=project, number=2, state="rejected", parent=v1,
    metrics=cycle([0.69, 0.8, 0.85, 7.0, 9.9], [0.68, 0.79, 0.84, 6.9, 9.8], "v1", -0.1,
                  [-0.6, 0.3]),
)
for n in range(4):
    add(images[3], n, "semi", 1, version=v1)
add(images[3], 4, "semi", 1, seconds=8, clicks=1, user=anna)
add(images[3], 5, "semi", 1, seconds=10, clicks=1, user=anna)
reviews = ["accepted", "accepted", "rejected"] + ["pending"] * 5
for n in range(8):
    add(images[4 + n // 5], n % 5, "automatic", 0, version=v1, review=reviews[n])
Job.objects.create(project=project, kind="export", state="succeeded", progress=1.0,
                   message="1,234 masks exported", finished_at=timezone.now())
running = Job.objects.create(project=project, kind="automatic", state="running", progress=0.4,
                             message="images 4/10", key="v-test")
empty = create_project("A new project", owner=admin, categories=["thing"])
days = [(today - timedelta(days=d)).isoformat() for d in (2, 1, 0)]
print(json.dumps({"empty": empty.pk, "days": days, "running": running.pk}))
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The platform without its worker: launched jobs wait in the queue."""
    with serve_platform(tmp_path_factory.mktemp("served"), worker=False) as platform:
        yield platform


@pytest.fixture(scope="module")
def world(served: Served) -> dict[str, Any]:
    return served.shell(SETUP)


@pytest.fixture
def browser_page(page: Any) -> Iterator[Any]:
    """The page must raise no JavaScript error. It stops reloading the figures before the
    browser closes: a request cut off mid-way can leave the server unable to exit."""
    errors = collect_errors(page)
    yield page
    if "/dashboard/" in page.url:
        page.evaluate("window.maskloop && window.maskloop.stop()")
    assert not errors, f"JavaScript errors on the page: {errors}"


def open_dashboard(page: Any, served: Served, project: int = 1) -> None:
    page.goto(f"{served.url}/projects/{project}/dashboard/")
    wait_for_load(page, 1)


def wait_for_load(page: Any, loads: int) -> None:
    page.wait_for_function(
        "(n) => window.maskloop && window.maskloop.loads() >= n", arg=loads, timeout=TIMEOUT_MS
    )


def row(page: Any, selector: str) -> dict[str, str]:
    """A table row's cells by their data-key."""
    cells = page.locator(f"{selector} [data-key]")
    keys = [cells.nth(i).get_attribute("data-key") for i in range(cells.count())]
    return dict(zip(keys, cells.all_inner_texts(), strict=True))


def series(page: Any, chart: str) -> dict[str, list[tuple[str, float]]]:
    """{series key: [(x, y), ...]} as the chart's SVG draws them."""
    drawn = page.evaluate(
        """(id) => Object.fromEntries(
          [...document.querySelectorAll(`#${id} svg g.series`)].map((g) => [
            g.dataset.series,
            [...g.querySelectorAll("[data-x]")].map((p) => [p.dataset.x, Number(p.dataset.y)]),
          ]),
        )""",
        chart,
    )
    return {key: [(x, y) for x, y in points] for key, points in drawn.items()}


def legend(page: Any, chart: str) -> list[str]:
    return [str(text) for text in page.locator(f"#{chart} .legend li").all_inner_texts()]


def test_the_tables_give_the_figures_per_stage_and_per_model_version(
    browser_page: Any, served: Served, world: dict[str, Any]
) -> None:
    page = browser_page
    log_in(page, served, "admin", "maskloop-demo")
    page.goto(served.url + "/projects/1/")
    page.click("#open-dashboard")
    page.wait_for_url(served.url + "/projects/1/dashboard/")
    wait_for_load(page, 1)

    # The paper's comparison of the stages: masks per image, seconds and clicks per mask.
    stages = page.locator("#stage-rows tr").evaluate_all("rows => rows.map(r => r.dataset.stage)")
    assert stages == ["assisted", "semi", "automatic"]
    assert row(page, "#stage-rows tr[data-stage='assisted']") == {
        "masks": "7",
        "images": "3",
        "masks_per_image": "2.33",
        "seconds_per_mask": "20.7 s",  # (30 + 20 + 10 + 40 + 12 + 15 + 18) / 7
        "clicks_per_mask": "2.29",  # 16 / 7
    }
    assert row(page, "#stage-rows tr[data-stage='semi']") == {
        "masks": "6",
        "images": "1",
        "masks_per_image": "6.00",
        "seconds_per_mask": "9.0 s",  # anna's two; the model's pre-filled masks take none
        "clicks_per_mask": "1.00",
    }
    automatic = row(page, "#stage-rows tr[data-stage='automatic']")
    assert automatic["masks_per_image"] == "4.00" and automatic["seconds_per_mask"] == "—"
    assert "14 s" in page.inner_text("#stage-rows tr[data-stage='assisted'] .reference")

    # Per model version: the cycle's figures, what it was compared with, the gate, the review.
    v1 = row(page, "#version-rows tr[data-version='1']:not(.subrow)")
    assert v1 == {
        "state": "promoted",
        "miou@1": "0.680",
        "miou@3": "0.790",
        "miou@5": "0.840",
        "noc@85": "6.90",
        "noc@90": "9.80",
        "compared_with": "v0",
        "gain": "+1.20 NoC@85\n[+0.40, +2.10]",
        "automatic_masks": "8",
        "share_iou_above_0_90": "100%",  # 2 accepted, kept with IoU 1
        "share_iou_above_0_75": "100%",
        "share_rejected": "33.3%",  # 1 of 3 reviewed
    }
    assert "good" in str(page.get_attribute("#version-rows tr[data-version='1'] .gain", "class"))
    v2 = row(page, "#version-rows tr[data-version='2']")
    assert v2["state"] == "rejected" and v2["compared_with"] == "v1"
    assert v2["gain"] == "−0.10 NoC@85\n[−0.60, +0.30]"
    assert "unsure" in str(page.get_attribute("#version-rows tr[data-version='2'] .gain", "class"))
    assert v2["share_iou_above_0_90"] == "—"
    # Version 0: its shipped card's figures, one line per held-out set.
    v0 = row(page, "#version-rows tr[data-version='0']:not(.subrow)")
    assert v0["state"] == "retired" and v0["miou@1"] == "0.610" and v0["noc@90"] == "11.20"
    assert v0["compared_with"] == "shipped card\ndavis345" and v0["gain"] == "—"
    horse = row(page, "#version-rows tr.subrow[data-set='weizmann-horse326']")
    assert horse["miou@1"] == "0.660" and horse["noc@85"] == "6.10"

    # The jobs: the running one first, with its progress bar.
    jobs = page.locator("#job-list .job")
    assert jobs.count() == 2
    first = jobs.nth(0)
    assert first.get_attribute("data-job-id") == str(world["running"])
    assert first.get_attribute("data-state") == "running"
    assert first.locator(".progress").get_attribute("aria-valuenow") == "40"
    assert first.locator(".job-message").inner_text() == "images 4/10"
    assert jobs.nth(1).locator(".job-kind").inner_text() == "Export"
    assert page.inner_text("#jobs-active") == "1 running or queued"
    screenshot(page, "dashboard")


def test_the_charts_plot_each_stage_day_by_day_and_each_model_version(
    browser_page: Any, served: Served, world: dict[str, Any]
) -> None:
    page = browser_page
    log_in(page, served, "admin", "maskloop-demo")
    open_dashboard(page, served)
    two, one, today = world["days"]

    # Masks per day: stacked bars, one series per stage.
    assert series(page, "chart-masks") == {
        "assisted": [(two, 4), (one, 3)],
        "semi": [(one, 6)],
        "automatic": [(today, 8)],
    }
    assert legend(page, "chart-masks") == ["Assisted-manual", "Semi-automatic", "Fully automatic"]
    assert page.locator("#chart-masks svg rect.bar").count() == 4
    assert series(page, "chart-masks-per-image") == {
        "assisted": [(two, 2.0), (one, 3.0)],
        "semi": [(one, 6.0)],
        "automatic": [(today, 4.0)],
    }
    # Seconds and clicks exist for the masks people made only: no automatic series.
    assert series(page, "chart-seconds") == {
        "assisted": [(two, 25.0), (one, 15.0)],
        "semi": [(one, 9.0)],
    }
    assert legend(page, "chart-seconds") == ["Assisted-manual", "Semi-automatic"]
    assert series(page, "chart-clicks") == {
        "assisted": [(two, 2.5), (one, 2.0)],
        "semi": [(one, 1.0)],
    }
    # A line joins the days of a stage; axes carry the days and their titles.
    assert page.locator("#chart-seconds g[data-series='assisted'] path.line").count() == 1
    x_ticks = page.locator("#chart-seconds .axis-x text:not(.axis-title)").all_text_contents()
    assert len(x_ticks) == 3
    titles = page.locator("#chart-seconds .axis-title").all_text_contents()
    assert titles == ["seconds", "day"]

    # Per version: mIoU after 1, 3, 5 clicks and NoC at 85 and 90 (v0: its first shipped set).
    assert series(page, "chart-miou") == {
        "miou@1": [("v0", 0.61), ("v1", 0.68), ("v2", 0.69)],
        "miou@3": [("v0", 0.74), ("v1", 0.79), ("v2", 0.8)],
        "miou@5": [("v0", 0.8), ("v1", 0.84), ("v2", 0.85)],
    }
    assert series(page, "chart-noc") == {
        "noc@85": [("v0", 8.5), ("v1", 6.9), ("v2", 7.0)],
        "noc@90": [("v0", 11.2), ("v1", 9.8), ("v2", 9.9)],
    }
    assert legend(page, "chart-noc") == ["NoC@85", "NoC@90"]
    y_ticks = page.locator("#chart-miou .axis-y text:not(.axis-title)").all_text_contents()
    assert y_ticks[0] == "0" and y_ticks[-1] == "1.00"


def test_an_annotator_sees_the_figures_but_no_admin_controls(
    browser_page: Any, served: Served, world: dict[str, Any]
) -> None:
    page = browser_page
    log_in(page, served, "anna", "pw-anna")
    open_dashboard(page, served)
    assert page.locator("#stage-rows tr").count() == 3
    assert page.locator("#version-rows tr[data-version]").count() == 4
    assert page.locator("#retrain").count() == 0
    assert page.locator("#stage-select").count() == 0
    assert page.inner_text("#stage-badge") == "Assisted-manual"


def test_an_admin_changes_the_stage_and_launches_a_retraining_cycle(
    browser_page: Any, served: Served, world: dict[str, Any]
) -> None:
    page = browser_page
    log_in(page, served, "admin", "maskloop-demo")
    open_dashboard(page, served)
    assert page.input_value("#stage-select") == "assisted"

    page.select_option("#stage-select", "semi")
    page.wait_for_function(
        "document.querySelector('#dash-status').textContent.startsWith('Stage: Semi-automatic')",
        timeout=TIMEOUT_MS,
    )
    with closing(database(served)) as db:
        stage = db.execute("SELECT stage FROM annotator_project WHERE id = 1").fetchone()[0]
    assert stage == "semi"
    page.reload()
    wait_for_load(page, 1)
    assert page.input_value("#stage-select") == "semi"

    # A cycle: 202 and the job in the list, queued (this platform has no worker).
    page.click("#retrain")
    page.wait_for_function(
        "document.querySelector('#dash-status').textContent.startsWith('Retraining cycle started')",
        timeout=TIMEOUT_MS,
    )
    with closing(database(served)) as db:
        job = db.execute(
            "SELECT id, state, params FROM annotator_job WHERE project_id = 1 AND kind = 'retrain'"
        ).fetchone()
    assert job["state"] == "queued" and json.loads(job["params"])["mode"] == "full"
    assert f"(job #{job['id']}), training the whole model" in page.inner_text("#dash-status")
    item = page.locator(f"#job-list .job[data-job-id='{job['id']}']")
    item.wait_for(timeout=TIMEOUT_MS)
    assert item.locator(".job-kind").inner_text() == "Retraining cycle"
    assert item.get_attribute("data-state") == "queued"
    assert item.locator(".job-message").inner_text() == "Waiting for a worker."
    assert page.inner_text("#jobs-active") == "2 running or queued"

    # A second launch while it waits: the server's 409, said on the page; no second job.
    page.click("#retrain")
    page.wait_for_function(
        "document.querySelector('#dash-status').textContent.startsWith('Not started')",
        timeout=TIMEOUT_MS,
    )
    status = page.inner_text("#dash-status")
    assert "already queued" in status and f"(job #{job['id']})" in status
    assert page.get_attribute("#dash-status", "data-kind") == "warn"
    with closing(database(served)) as db:
        count = db.execute("SELECT COUNT(*) FROM annotator_job WHERE kind = 'retrain'").fetchone()
    assert count[0] == 1
    screenshot(page, "dashboard-admin-actions")

    # Training the HQ head needs a trained model to put it on; GrabCut answers here.
    page.select_option("#retrain-mode", "hq")
    page.click("#retrain")
    page.wait_for_function(
        "document.querySelector('#dash-status').textContent.includes('promote a version first')",
        timeout=TIMEOUT_MS,
    )
    assert page.get_attribute("#dash-status", "data-kind") == "error"


def test_a_new_project_says_what_will_appear(
    browser_page: Any, served: Served, world: dict[str, Any]
) -> None:
    page = browser_page
    log_in(page, served, "admin", "maskloop-demo")
    open_dashboard(page, served, world["empty"])
    assert page.inner_text("#stage-rows").startswith("No masks yet.")
    assert page.is_visible("#time-empty") and not page.is_visible("#time-charts")
    assert page.inner_text("#time-empty").startswith("No masks yet.")
    assert page.is_visible("#versions-empty") and not page.is_visible("#versions-figures")
    assert "GrabCut answers the clicks" in page.inner_text("#versions-empty")
    assert page.is_visible("#jobs-empty") and page.locator("#job-list .job").count() == 0
    assert page.locator("svg.chart-svg").count() == 0
    screenshot(page, "dashboard-empty")

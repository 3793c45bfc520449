"""The review page in Debian's Chromium, against the platform as the README starts it: a
reviewer accepts, rejects, skips and fixes (on the annotation page, with the eraser) the masks
a model version made alone on the demo's coins.png, and the quality figures follow; then the
Mask rows are read straight from the SQLite file."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import numpy as np
import pytest

from engine import rle
from tests.browser.conftest import screenshot
from tests.browser.helpers import COINS, collect_errors, database, log_in
from tests.served import Served

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MASKS = 6
TIMEOUT_MS = 30_000

# Run in the served platform's own database (manage.py shell): a reviewer and an annotator of
# the demo project, a model version, and the coins of coins.png as its automatic masks (a
# watershed segmentation, as in scikit-image's coins example).
SETUP = (
    COINS
    + """
import json
from django.contrib.auth import get_user_model
from annotator.models import Mask, Membership, ModelVersion, Project
from engine import rle

project = Project.objects.get(pk=1)
for name, role in (("rita", "reviewer"), ("anna", "annotator")):
    user = get_user_model().objects.create_user(name, password="pw-" + name)
    Membership.objects.create(project=project, user=user, role=role)
image = project.images.get(file_name="coins.png")
numbers = project.model_versions.values_list("number", flat=True)
version = ModelVersion.objects.create(
    project=project, number=max(numbers, default=0) + 1, state="candidate"
)
ids = []
for n, pixels in enumerate(largest_coins(%(count)d)):
    encoded = rle.from_mask(pixels)
    ids.append(Mask.objects.create(
        image=image, rle_counts=encoded.counts, bbox=rle.bbox(encoded), area=rle.area(encoded),
        source_stage="automatic", model_version=version, predicted_iou=0.97 - 0.02 * n,
        stability_score=0.99 - 0.01 * n, point_coords=[[10.0, 10.0]],
    ).pk)
print(json.dumps({"version": version.number, "masks": ids, "image": image.pk}))
"""
)


@pytest.fixture(scope="module")
def review_world(served: Served) -> dict[str, Any]:
    return served.shell(SETUP % {"count": MASKS})


@pytest.fixture
def browser_page(page: Any) -> Iterator[Any]:
    """The page must raise no JavaScript error."""
    errors = collect_errors(page)
    yield page
    assert not errors, f"JavaScript errors on the page: {errors}"


def masks_by_id(served: Served, ids: list[int]) -> dict[int, sqlite3.Row]:
    with closing(database(served)) as db:
        rows = db.execute(
            f"SELECT * FROM annotator_mask WHERE id IN ({','.join('?' * len(ids))})", ids
        ).fetchall()
    return {row["id"]: row for row in rows}


def state(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("window.maskloop.state()"))


def shown_mask(page: Any, other_than: int | None = None) -> int:
    """Wait until a mask (another one than `other_than`) is on screen; its id."""
    page.wait_for_function(
        """(other) => {
          const s = window.maskloop && window.maskloop.state();
          return s && !s.loading && !s.busy && s.mask !== null && s.mask !== other;
        }""",
        arg=other_than,
        timeout=TIMEOUT_MS,
    )
    return int(state(page)["mask"])


def quality_row(page: Any, version: int) -> dict[str, str]:
    headers = page.locator("#quality-table thead th").all_inner_texts()
    cells = page.locator(f"#quality-rows tr[data-version='{version}'] > *").all_inner_texts()
    return dict(zip(headers, cells, strict=True))


def wait_for_reviewed(page: Any, version: int, reviewed: int) -> dict[str, str]:
    page.wait_for_function(
        """([version, reviewed]) => {
          const row = document.querySelector(`#quality-rows tr[data-version='${version}']`);
          return row && row.children[2].textContent === String(reviewed);
        }""",
        arg=[version, reviewed],
        timeout=TIMEOUT_MS,
    )
    return quality_row(page, version)


def at(page: Any, x: float, y: float) -> tuple[float, float]:
    point = page.evaluate(f"window.maskloop.toPage({x}, {y})")
    return point["x"], point["y"]


def test_an_annotator_may_not_review(
    browser_page: Any, served: Served, review_world: dict[str, Any]
) -> None:
    page = browser_page
    log_in(page, served, "anna")
    response = page.goto(served.url + "/projects/1/review/")
    assert response is not None and response.status == 403
    page.goto(served.url + "/projects/1/")
    assert page.locator("#start-annotating").is_visible()
    assert page.locator("#start-reviewing").count() == 0


def test_a_reviewer_accepts_rejects_skips_and_fixes_automatic_masks(
    browser_page: Any, served: Served, review_world: dict[str, Any]
) -> None:
    page = browser_page
    version = review_world["version"]
    ids = review_world["masks"]
    originals = {i: row["rle_counts"] for i, row in masks_by_id(served, ids).items()}
    log_in(page, served, "rita")

    # From the project page, with the count of masks waiting.
    page.goto(served.url + "/projects/1/")
    assert page.inner_text("#to-review") == f"{MASKS} to review"
    page.click("#start-reviewing")
    page.wait_for_url(served.url + "/projects/1/review/")
    first = shown_mask(page)
    assert first in ids
    assert page.inner_text("#pending") == f"{MASKS} to review"
    assert page.inner_text("#image-name") == "coins.png"
    assert page.inner_text("#mask-version") == f"v{version}"
    assert re.fullmatch(r"0\.[89]\d\d", page.inner_text("#mask-iou"))  # 0.97 down to 0.87
    assert page.inner_text("#mask-id") == f"#{first}"
    assert page.locator(f"#version option[value]:has-text('v{version}')").count() == 1

    # The overlay lies on the mask: inside the mask the canvas is tinted, outside it is not.
    assert overlay_follows_the_mask(page, originals[first])
    page.keyboard.press("z")  # framed on the mask, and back
    assert state(page)["zoomed"]
    assert overlay_follows_the_mask(page, originals[first])
    screenshot(page, "review-zoomed")
    page.keyboard.press("z")
    page.keyboard.press("h")
    assert not state(page)["shown"]
    page.keyboard.press("h")

    # A accepts; the Reject button rejects; Skip leaves one for later.
    page.keyboard.press("a")
    second = shown_mask(page, other_than=first)
    wait_for_reviewed(page, version, 1)
    page.click("#reject")
    third = shown_mask(page, other_than=second)
    wait_for_reviewed(page, version, 2)
    page.click("#skip")
    fourth = shown_mask(page, other_than=third)
    assert state(page)["skipped"] == [third]
    assert page.inner_text("#pending") == f"{MASKS - 2} to review"

    # F opens the annotation page with the mask open for editing; the eraser takes a band
    # out of the coin; Enter saves it as fixed and comes back.
    page.keyboard.press("f")
    page.wait_for_url(re.compile(rf"/projects/1/images/\d+/annotate/\?edit={fourth}&review=1$"))
    page.wait_for_function(
        f"""() => window.maskloop && window.maskloop.state().loaded
             && document.getElementById('draft-mode').textContent === 'fixing #{fourth}'""",
        timeout=TIMEOUT_MS,
    )
    assert page.get_attribute("#tool-brush", "aria-pressed") == "true"
    assert page.locator("#save").is_disabled()  # nothing changed yet
    screenshot(page, "review-fix")
    assert page.locator("#back-to-review").is_visible()
    before = int(page.get_attribute("#draft-area", "data-area"))
    page.keyboard.press("e")
    for _ in range(2):
        page.keyboard.press("]")
    x0, y0, width, height = json.loads(masks_by_id(served, [fourth])[fourth]["bbox"])
    middle = y0 + height / 2
    page.mouse.move(*at(page, x0 - 4, middle))
    page.mouse.down()
    page.mouse.move(*at(page, x0 + width + 4, middle), steps=12)
    page.mouse.up()
    after = int(page.get_attribute("#draft-area", "data-area"))
    assert 0 < after < before - 200
    assert page.locator("#save").is_enabled()
    page.keyboard.press("Enter")
    page.wait_for_url(served.url + "/projects/1/review/", timeout=TIMEOUT_MS)
    fifth = shown_mask(page)
    assert fifth not in (first, second, third, fourth)
    assert f"fix of mask #{fourth}" in page.inner_text("#status-message")
    row = wait_for_reviewed(page, version, 3)
    assert state(page)["skipped"] == [third]  # kept across the trip to the annotation page
    screenshot(page, "review-page")
    page.screenshot(path="/tmp/review.png", full_page=True)

    rows = masks_by_id(served, ids)
    assert rows[first]["review_state"] == "accepted"
    assert rows[second]["review_state"] == "rejected"
    assert rows[third]["review_state"] == "pending"
    fixed = rows[fourth]
    assert fixed["review_state"] == "fixed"
    assert fixed["original_rle_counts"] == originals[fourth]  # the model's mask, kept
    assert fixed["rle_counts"] != originals[fourth]
    assert fixed["area"] == after
    assert fixed["revision"] == 2
    height_px, width_px = 303, 384
    model = rle.to_mask(rle.Rle(height_px, width_px, originals[fourth]))
    corrected = rle.to_mask(rle.Rle(height_px, width_px, fixed["rle_counts"]))
    assert not (corrected & ~model).any()  # the eraser only took pixels away
    iou = float((model & corrected).sum() / (model | corrected).sum())

    # Accepted counts IoU 1, the fixed one its IoU: the shares of the two kept masks.
    assert row == {
        "Version": f"v{version}",
        "Masks": str(MASKS),
        "Reviewed": "3",
        "Accepted": "1",
        "Fixed": "1",
        "Rejected": "1",
        "IoU > 0.90": share(1 + (iou > 0.9), 2),
        "IoU > 0.75": share(1 + (iou > 0.75), 2),
        "Rejected share": share(1, 3),
    }

    # The last two are accepted; then nothing is left but the skipped one.
    page.keyboard.press("a")
    sixth = shown_mask(page, other_than=fifth)
    page.keyboard.press("a")
    page.wait_for_selector("#empty:not([hidden])", timeout=TIMEOUT_MS)
    assert "except the 1 mask you skipped" in page.inner_text("#empty")
    screenshot(page, "review-nothing-left")
    row = wait_for_reviewed(page, version, 5)
    assert (row["Accepted"], row["Fixed"], row["Rejected"]) == ("3", "1", "1")
    assert page.inner_text("#pending") == "1 to review"
    assert page.locator("#accept").is_disabled()
    rows = masks_by_id(served, [fifth, sixth])
    assert {r["review_state"] for r in rows.values()} == {"accepted"}

    # U puts the last accepted one back, shown again.
    page.keyboard.press("u")
    assert shown_mask(page) == sixth
    assert masks_by_id(served, [sixth])[sixth]["review_state"] == "pending"
    page.keyboard.press("a")
    page.wait_for_selector("#empty:not([hidden])", timeout=TIMEOUT_MS)

    # The skipped mask comes back when asked for.
    page.click("#unskip")
    assert shown_mask(page) == third
    assert state(page)["skipped"] == []

    # The version filter: this version's masks only, counted apart.
    page.select_option("#version", label=f"v{version} · candidate")
    page.wait_for_function(
        f"() => document.getElementById('pending').textContent === '1 to review in v{version}'",
        timeout=TIMEOUT_MS,
    )
    assert shown_mask(page) == third
    assert "current" in (
        page.get_attribute(f"#quality-rows tr[data-version='{version}']", "class") or ""
    )


def share(part: int, whole: int) -> str:
    value = round(part / whole * 100, 1)
    return f"{value:g}%"


def overlay_follows_the_mask(page: Any, counts: str) -> bool:
    """Sample the canvas at pixels deep inside and far outside the mask: the overlay tints
    the inside (more blue-green than the grey photo) and leaves the outside alone."""
    mask = rle.to_mask(rle.Rle(303, 384, counts))
    ys, xs = np.nonzero(mask)
    cy, cx = int(ys.mean()), int(xs.mean())
    assert mask[cy, cx]
    outside = (int(xs.max()) + 30, cy) if xs.max() + 30 < 384 else (int(xs.min()) - 30, cy)
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    colours = page.evaluate(
        """([inside, outside]) => {
          const canvas = document.getElementById('canvas');
          const ctx = canvas.getContext('2d');
          const box = canvas.getBoundingClientRect();
          const ratio = canvas.width / box.width;
          return [inside, outside].map(([x, y]) => {
            const p = window.maskloop.toPage(x + 0.5, y + 0.5);
            const px = Math.round((p.x - box.left) * ratio);
            const py = Math.round((p.y - box.top) * ratio);
            return Array.from(ctx.getImageData(px, py, 1, 1).data);
          });
        }""",
        [[cx, cy], list(outside)],
    )
    inside_rgb, outside_rgb = colours[0], colours[1]
    tinted = inside_rgb[2] - inside_rgb[0] > 40  # cyan over grey: blue well above red
    untouched = abs(outside_rgb[2] - outside_rgb[0]) < 15  # grey photo
    return bool(tinted and untouched)

"""The annotation page in Debian's Chromium, against the platform as the README starts it:
click a point, see GrabCut's mask, exclude a point, paint with the brush, pick a category,
save; then read the Mask and its PromptLog rows straight from the SQLite file."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import numpy as np
import pytest

from engine import rle
from tests.browser.conftest import screenshot
from tests.browser.helpers import DEMO_PASSWORD, collect_errors, database, log_in
from tests.served import Served

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Image pixels of the demo's coffee.png (600x400): the cup's inside, the saucer's rim, a
# stretch of saucer next to the cup that GrabCut leaves out, and the spoon.
CUP = (290, 140)
SAUCER = (200, 330)
STROKE = [(95, 300), (120, 330), (150, 355)]
SPOON = (365, 290)
PREDICTION_TIMEOUT_MS = 30_000


@pytest.fixture
def annotator_page(page: Any, served: Served) -> Iterator[Any]:
    """The demo admin, logged in; the page must raise no JavaScript error."""
    errors = collect_errors(page)
    log_in(page, served, "admin", DEMO_PASSWORD)
    yield page
    assert not errors, f"JavaScript errors on the page: {errors}"


def state(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("window.maskloop.state()"))


def open_image(page: Any, served: Served, file_name: str) -> None:
    """From the project page, the image's Annotate link; then wait for the photo and model."""
    page.goto(served.url + "/projects/1/")
    page.locator(f".tile:has-text('{file_name}') a.annotate-link").click()
    page.wait_for_url(re.compile(r"/projects/1/images/\d+/annotate/$"))
    page.wait_for_function(
        "() => window.maskloop && window.maskloop.state().ready && window.maskloop.state().loaded",
        timeout=PREDICTION_TIMEOUT_MS,
    )


def at(page: Any, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of an image pixel, through the page's own view transform."""
    point = page.evaluate(f"window.maskloop.toPage({x}, {y})")
    return point["x"], point["y"]


def click_image(page: Any, x: float, y: float, *, button: str = "left") -> None:
    page.mouse.click(*at(page, x, y), button=button)
    wait_for_answer(page)


def wait_for_answer(page: Any) -> None:
    page.wait_for_function("() => !window.maskloop.state().pending", timeout=PREDICTION_TIMEOUT_MS)


def drag(page: Any, points: list[tuple[float, float]]) -> None:
    page.mouse.move(*at(page, *points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*at(page, *point), steps=6)
    page.mouse.up()


def test_an_annotator_clicks_brushes_and_saves_a_mask(annotator_page: Any, served: Served) -> None:
    page = annotator_page
    open_image(page, served, "coffee.png")
    assert "GrabCut" in page.inner_text("#status-model")

    # A click on the cup: GrabCut's one mask is drawn and offered as the only candidate.
    click_image(page, *CUP)
    predicted = state(page)
    assert predicted["area"] > 1000
    assert predicted["points"] == [
        {"x": pytest.approx(CUP[0], abs=0.5), "y": pytest.approx(CUP[1], abs=0.5), "label": 1}
    ]
    first = page.locator(".candidate").nth(0)
    assert first.get_attribute("aria-pressed") == "true"
    assert first.locator(".score").inner_text() == "n/a"  # GrabCut has no IoU estimate
    assert page.locator(".candidate").nth(1).is_disabled()
    assert page.locator(".candidate").nth(2).is_disabled()
    assert re.search(r"\d+ ms round trip", page.inner_text("#status-rtt"))
    assert int(page.get_attribute("#draft-area", "data-area")) == predicted["area"]

    # A right click excludes a point.
    click_image(page, *SAUCER, button="right")
    excluded = state(page)
    assert [p["label"] for p in excluded["points"]] == [1, 0]
    assert page.get_attribute("#draft-points", "data-negative") == "1"
    assert excluded["area"] > 0

    # The brush paints a stroke of saucer into the mask: the area grows.
    page.keyboard.press("b")
    assert page.get_attribute("#tool-brush", "aria-pressed") == "true"
    page.keyboard.press("]")
    drag(page, STROKE)
    brushed = state(page)
    assert brushed["edited"]
    assert brushed["area"] > excluded["area"] + 200
    assert page.inner_text("#draft-mode") == "brushed"

    page.select_option("#category", label="food")
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.maskloop.state().saved.length === 1")
    assert page.inner_text("#status-message").startswith("Saved mask #")
    assert state(page)["area"] == 0  # the prompt is cleared for the next object
    assert page.locator("#mask-list .mask-item").count() == 1
    assert "food" in page.inner_text("#mask-list")
    screenshot(page, "annotate-saved")

    mask_id = state(page)["saved"][0]["id"]
    with closing(database(served)) as db:
        mask = db.execute(
            "SELECT m.*, u.username, c.name AS category_name, i.width, i.height, i.state "
            "FROM annotator_mask m JOIN auth_user u ON u.id = m.created_by_id "
            "JOIN annotator_image i ON i.id = m.image_id "
            "LEFT JOIN annotator_category c ON c.id = m.category_id WHERE m.id = ?",
            (mask_id,),
        ).fetchone()
        logs = db.execute(
            "SELECT kind, data FROM annotator_promptlog WHERE mask_id = ? ORDER BY id", (mask_id,)
        ).fetchall()
    assert mask["source_stage"] == "assisted"
    assert mask["username"] == "admin"
    assert mask["category_name"] == "food"
    assert mask["clicks"] == 2
    assert mask["seconds_spent"] > 0
    assert mask["model_version_id"] is None  # GrabCut answered
    assert mask["predicted_iou"] is None  # brushed: the model's estimate no longer applies
    assert mask["area"] == brushed["area"]
    assert mask["state"] == "in_progress"
    decoded = rle.to_mask(rle.Rle(mask["height"], mask["width"], mask["rle_counts"]))
    assert decoded.shape == (400, 600)
    assert int(decoded.sum()) == mask["area"]
    assert decoded[CUP[1], CUP[0]]  # the cup is in it
    assert decoded[STROKE[1][1], STROKE[1][0]]  # and so is the brushed saucer
    assert json.loads(mask["point_coords"]) == [list(CUP), list(SAUCER)]

    kinds = [row["kind"] for row in logs]
    assert kinds == ["point", "point", "brush", "save"]
    points = [json.loads(row["data"]) for row in logs[:2]]
    assert [(p["x"], p["y"], p["label"]) for p in points] == [(*CUP, 1), (*SAUCER, 0)]
    assert json.loads(logs[2]["data"])["pixels"] > 200
    assert json.loads(logs[3]["data"])["area"] == mask["area"]


def test_undo_restores_the_previous_mask_and_redo_the_next(
    annotator_page: Any, served: Served
) -> None:
    page = annotator_page
    open_image(page, served, "coffee.png")
    click_image(page, *CUP)
    cup = state(page)["area"]
    click_image(page, *SPOON)
    both = state(page)["area"]
    assert both != cup

    page.keyboard.press("Control+z")
    wait_for_answer(page)
    undone = state(page)
    assert undone["area"] == cup
    assert len(undone["points"]) == 1

    page.keyboard.press("Control+Shift+z")
    assert state(page)["area"] == both

    # A brush stroke is one step too.
    page.keyboard.press("b")
    drag(page, STROKE)
    assert state(page)["area"] > both
    page.keyboard.press("Control+z")
    assert state(page)["area"] == both
    page.keyboard.press("Control+y")
    assert state(page)["area"] > both

    # Esc clears the prompt; nothing is saved.
    page.keyboard.press("Escape")
    assert state(page)["area"] == 0
    assert state(page)["points"] == []


def test_own_masks_can_be_selected_hidden_and_deleted(annotator_page: Any, served: Served) -> None:
    page = annotator_page
    open_image(page, served, "chelsea.png")
    click_image(page, 225, 150)
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.maskloop.state().saved.length >= 1")
    mask_id = state(page)["saved"][-1]["id"]
    item = page.locator(f"#mask-list .mask-item[data-mask-id='{mask_id}']")

    item.get_by_role("button", name=f"Select mask {mask_id}").click()
    assert "selected" in (item.get_attribute("class") or "")
    item.get_by_role("button", name=f"Hide mask {mask_id}").click()
    assert "hidden" in (item.get_attribute("class") or "")
    item.get_by_role("button", name=f"Show mask {mask_id}").click()

    # Deleting takes two clicks on the bin (no modal dialog).
    item.get_by_role("button", name=f"Delete mask {mask_id}").click()
    assert page.locator(f"[data-mask-id='{mask_id}']").count() == 1
    item.get_by_role("button", name=f"Delete mask {mask_id}").click()
    page.wait_for_function(f"() => !window.maskloop.state().saved.some((m) => m.id === {mask_id})")
    with closing(database(served)) as db:
        gone = db.execute("SELECT COUNT(*) FROM annotator_mask WHERE id = ?", (mask_id,))
        assert gone.fetchone()[0] == 0


def test_start_annotating_then_n_goes_to_another_image(annotator_page: Any, served: Served) -> None:
    page = annotator_page
    page.goto(served.url + "/projects/1/")
    page.click("#start-annotating")
    page.wait_for_url(re.compile(r"/projects/1/images/\d+/annotate/$"))
    first = int(re.findall(r"/images/(\d+)/", page.url)[0])
    page.wait_for_function("() => window.maskloop && window.maskloop.state().ready")

    page.keyboard.press("n")
    page.wait_for_url(lambda url: f"/images/{first}/" not in url, timeout=15_000)
    assert re.search(r"/projects/1/images/\d+/annotate/$", page.url)
    with closing(database(served)) as db:
        done = db.execute("SELECT state FROM annotator_image WHERE id = ?", (first,)).fetchone()
    assert done["state"] == "annotated"
    page.wait_for_function("() => window.maskloop && window.maskloop.state().loaded")
    screenshot(page, "annotate-next-image")


def test_the_page_rle_codec_matches_pycocotools(annotator_page: Any, served: Served) -> None:
    """The page's COCO RLE decoder and encoder (static/frontend/annotate/rle.js) against the
    server's, on random masks of awkward sizes."""
    page = annotator_page
    rng = np.random.default_rng(7)
    cases = []
    for height, width in [(1, 1), (5, 3), (37, 61), (200, 300)]:
        for density in (0.0, 0.05, 0.5, 1.0):
            mask = rng.random((height, width)) < density
            cases.append(
                {
                    "h": height,
                    "w": width,
                    "counts": rle.from_mask(mask).counts,
                    "area": int(mask.sum()),
                    "rowMajor": np.flatnonzero(mask.ravel()).tolist(),
                }
            )
    results = page.evaluate(
        """async (cases) => {
          const m = await import("/static/frontend/annotate/rle.js");
          return cases.map((c) => {
            const mask = m.decodeMask(c.counts, c.h, c.w);
            const ones = [];
            mask.forEach((v, i) => { if (v) ones.push(i); });
            return { ones, runs: m.encodeMask(mask, c.h, c.w), area: m.maskArea(mask) };
          });
        }""",
        cases,
    )
    for case, result in zip(cases, results, strict=True):
        assert result["ones"] == case["rowMajor"]
        assert result["area"] == case["area"]
        assert result["runs"] == rle.decode_counts_string(case["counts"])

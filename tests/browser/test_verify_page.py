"""The verify page in Debian's Chromium, against the platform as the README starts it: a
reviewer judges the model's masks of the demo's photos good or bad (G / B), skips one, fixes
one on the annotation page and judges it again, then checks the annotated images for missed
objects (Y, or clicks + Enter); the rows are read straight from the SQLite file, and the
annotation page shows the annotator what came back (the rejected mask, the hints)."""

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

TIMEOUT_MS = 30_000

# Run in the served platform's own database (manage.py shell): a reviewer and an annotator of
# the demo project, a model version, the coins of coins.png (a watershed segmentation, as in
# scikit-image's coins example) and the cameraman of camera.png as its automatic masks, and a
# person's mask of the cat on chelsea.png; the three images annotated.
SETUP = (
    COINS
    + """
import json
from django.contrib.auth import get_user_model
from annotator.models import Image, Mask, Membership, ModelVersion, Project
from engine import rle

project = Project.objects.get(pk=1)
users = {}
for name, role in (("vera", "reviewer"), ("otto", "annotator")):
    users[name] = get_user_model().objects.create_user(name, password="pw-" + name)
    Membership.objects.create(project=project, user=users[name], role=role)
numbers = project.model_versions.values_list("number", flat=True)
version = ModelVersion.objects.create(
    project=project, number=max(numbers, default=0) + 1, state="candidate"
)

def store(image, pixels, source="automatic", user=None, n=0):
    encoded = rle.from_mask(pixels)
    return Mask.objects.create(
        image=image, rle_counts=encoded.counts, bbox=rle.bbox(encoded), area=rle.area(encoded),
        source_stage=source, model_version=None if user else version, created_by=user,
        predicted_iou=None if user else 0.95 - 0.02 * n,
        stability_score=None if user else 0.98 - 0.01 * n, point_coords=[[10.0, 10.0]],
    ).pk

coins_image = project.images.get(file_name="coins.png")
coin_ids = [store(coins_image, pixels, n=n) for n, pixels in enumerate(largest_coins(4))]

camera_image = project.images.get(file_name="camera.png")
dark, _ = ndi.label(ndi.binary_opening(data.camera() < 40, iterations=2))
man = dark == np.argmax(np.bincount(dark.ravel())[1:]) + 1
camera_ids = [store(camera_image, ndi.binary_fill_holes(man))]

cat_image = project.images.get(file_name="chelsea.png")
yy, xx = np.mgrid[: cat_image.height, : cat_image.width]
cat = ((xx - 250) / 150.0) ** 2 + ((yy - 150) / 120.0) ** 2 <= 1
cat_ids = [store(cat_image, cat, source="assisted", user=users["otto"])]

ready = [coins_image.pk, camera_image.pk, cat_image.pk]
Image.objects.filter(pk__in=ready).update(state="annotated")
print(json.dumps({
    "coins": coin_ids, "camera": camera_ids, "cat": cat_ids, "version": version.number,
    "images": {"coins": coins_image.pk, "camera": camera_image.pk, "cat": cat_image.pk},
}))
"""
)


@pytest.fixture(scope="module")
def verify_world(served: Served) -> dict[str, Any]:
    return served.shell(SETUP)


@pytest.fixture
def browser_page(page: Any) -> Iterator[Any]:
    """The page must raise no JavaScript error."""
    errors = collect_errors(page)
    yield page
    assert not errors, f"JavaScript errors on the page: {errors}"


def rows(served: Served, sql: str, *args: Any) -> list[sqlite3.Row]:
    with closing(database(served)) as connection:
        return connection.execute(sql, args).fetchall()


def mask_row(served: Served, mask_id: int) -> sqlite3.Row:
    (row,) = rows(served, "SELECT * FROM annotator_mask WHERE id = ?", mask_id)
    return row


def image_state(served: Served, image_id: int) -> str:
    (row,) = rows(served, "SELECT state FROM annotator_image WHERE id = ?", image_id)
    return str(row["state"])


def state(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("window.maskloop.state()"))


def shown(page: Any, kind: str = "mask", other_than: int | None = None) -> int:
    """Wait until a mask (or an image) other than `other_than` is on screen; its id."""
    page.wait_for_function(
        """([kind, other]) => {
          const s = window.maskloop && window.maskloop.state();
          const id = s && (kind === "mask" ? s.mask : s.image);
          return s && !s.loading && !s.busy && s.kind === kind && id !== null && id !== other;
        }""",
        arg=[kind, other_than],
        timeout=TIMEOUT_MS,
    )
    return int(state(page)["mask" if kind == "mask" else "image"])


def wait_for_empty(page: Any) -> None:
    page.wait_for_selector("#empty:not([hidden])", timeout=TIMEOUT_MS)


def at(page: Any, x: float, y: float) -> tuple[float, float]:
    point = page.evaluate(f"window.maskloop.toPage({x}, {y})")
    return point["x"], point["y"]


def overlay_follows_the_mask(page: Any, served: Served, mask_id: int) -> bool:
    """Inside the mask the canvas is tinted cyan (blue well above red), far outside it the
    photo is left alone."""
    row = mask_row(served, mask_id)
    (image,) = rows(
        served, "SELECT width, height FROM annotator_image WHERE id = ?", row["image_id"]
    )
    mask = rle.to_mask(rle.Rle(image["height"], image["width"], row["rle_counts"]))
    inside = np.argwhere(mask)
    cy, cx = (int(v) for v in inside[len(inside) // 2])
    outside = np.argwhere(~np.pad(mask, 25, constant_values=False)[25:-25, 25:-25])
    far = [
        (int(x), int(y))
        for y, x in outside[:: max(1, len(outside) // 400)]
        if not mask[max(0, y - 25) : y + 25, max(0, x - 25) : x + 25].any()
    ]
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    before = page.evaluate(
        """(points) => {
          const canvas = document.getElementById('canvas');
          const ctx = canvas.getContext('2d');
          const box = canvas.getBoundingClientRect();
          const ratio = canvas.width / box.width;
          return points.map(([x, y]) => {
            const p = window.maskloop.toPage(x + 0.5, y + 0.5);
            return Array.from(ctx.getImageData(
              Math.round((p.x - box.left) * ratio), Math.round((p.y - box.top) * ratio), 1, 1
            ).data);
          });
        }""",
        [[cx, cy], list(far[0])],
    )
    inside_rgb, outside_rgb = before
    return bool(inside_rgb[2] - inside_rgb[0] > 30 and abs(outside_rgb[2] - outside_rgb[0]) < 25)


def test_an_annotator_may_not_verify(
    browser_page: Any, served: Served, verify_world: dict[str, Any]
) -> None:
    page = browser_page
    log_in(page, served, "otto")
    response = page.goto(served.url + "/projects/1/verify/")
    assert response is not None and response.status == 403
    page.goto(served.url + "/projects/1/")
    assert page.locator("#start-verifying").count() == 0


def test_a_reviewer_verifies_masks_then_checks_images_for_missed_objects(
    browser_page: Any, served: Served, verify_world: dict[str, Any]
) -> None:
    page = browser_page
    coins, camera = verify_world["coins"], verify_world["camera"]
    images = verify_world["images"]
    log_in(page, served, "vera")

    # From the project page: five masks and no image yet (each waits for its masks) but the
    # cat's, which has only a person's mask.
    page.goto(served.url + "/projects/1/")
    assert page.inner_text("#to-verify") == "6 to verify"
    page.click("#start-verifying")
    page.wait_for_url(re.compile(r"/projects/1/verify/"))
    first = shown(page)
    assert first in coins + camera
    page.wait_for_function("() => document.getElementById('count-masks').textContent === '5'")
    assert page.inner_text("#count-images") == "1"
    assert page.inner_text("#sample") == "every model mask"
    assert page.inner_text("#mask-id") == f"#{first}"
    assert page.inner_text("#mask-version") == f"v{verify_world['version']}"
    assert page.inner_text("#mask-source") == "automatic"
    assert page.inner_text("#mask-review") == "pending"
    assert overlay_follows_the_mask(page, served, first)
    screenshot(page, "verify")
    page.keyboard.press("z")
    assert state(page)["zoomed"]
    page.keyboard.press("z")

    decided: dict[int, str] = {}
    skipped = fixed = None
    current = first
    while True:
        if current in camera and skipped is None:
            page.keyboard.press("s")  # later
            skipped = current
        elif current in coins and fixed is None:
            # F: the annotation page with the mask open; the eraser takes a band out of it;
            # Enter saves it as fixed and comes back here, where it is shown to be judged.
            fixed = current
            before = mask_row(served, current)
            page.keyboard.press("f")
            page.wait_for_url(
                re.compile(rf"/projects/1/images/\d+/annotate/\?edit={current}&verify=1$")
            )
            page.wait_for_function(
                f"""() => window.maskloop && window.maskloop.state().loaded
                     && document.getElementById('draft-mode').textContent === 'fixing #{current}'""",
                timeout=TIMEOUT_MS,
            )
            page.keyboard.press("e")
            for _ in range(2):
                page.keyboard.press("]")
            x0, y0, width, height = json.loads(before["bbox"])
            page.mouse.move(*at(page, x0 - 4, y0 + height / 2))
            page.mouse.down()
            page.mouse.move(*at(page, x0 + width + 4, y0 + height / 2), steps=12)
            page.mouse.up()
            page.keyboard.press("Enter")
            page.wait_for_url(re.compile(r"/projects/1/verify/"), timeout=TIMEOUT_MS)
            assert shown(page) == current
            assert f"fix of mask #{current}" in page.inner_text("#status-message")
            assert page.inner_text("#mask-review") == "fixed"
            page.keyboard.press("g")
            decided[current] = "good"
        elif current in coins and all(c in decided for c in coins if c != current):
            page.keyboard.press("b")  # the last coin: bad
            decided[current] = "bad"
        else:
            page.keyboard.press("g")
            decided[current] = "good"
        # The next: another mask (of the same image while it has some), or none.
        page.wait_for_function(
            """(previous) => {
              const s = window.maskloop.state();
              return !s.loading && !s.busy && (s.empty || (s.mask !== null && s.mask !== previous));
            }""",
            arg=current,
            timeout=TIMEOUT_MS,
        )
        if state(page)["empty"]:
            break
        following = int(state(page)["mask"])
        if (
            current in coins
            and any(c not in decided for c in coins)
            and decided.get(current) != "bad"
        ):
            assert following in coins, "masks of one image follow each other"
        current = following

    assert skipped is not None and fixed is not None
    assert "1 mask skipped" in page.inner_text("#empty-text")
    screenshot(page, "verify-nothing-left")
    page.click("#unskip")
    assert shown(page) == skipped
    page.click("#good")
    decided[skipped] = "good"
    wait_for_empty(page)

    # Every verdict is stored; the bad coin is rejected, kept, and coins.png went back.
    bad = [m for m, verdict in decided.items() if verdict == "bad"]
    assert len(bad) == 1 and sorted(decided) == sorted(coins + camera)
    for mask_id, verdict in decided.items():
        row = mask_row(served, mask_id)
        assert row["verification_state"] == verdict
        assert row["review_state"] == (
            "rejected" if verdict == "bad" else "fixed" if mask_id == fixed else "accepted"
        )
    assert image_state(served, images["coins"]) == "in_progress"
    decisions = rows(
        served, "SELECT * FROM annotator_verificationdecision WHERE kind = 'mask' ORDER BY id"
    )
    assert len(decisions) == len(coins + camera)
    assert all(d["seconds"] > 0 for d in decisions)
    assert {d["user_id"] for d in decisions} == {
        rows(served, "SELECT id FROM auth_user WHERE username = 'vera'")[0]["id"]
    }
    snapshot = json.loads(decisions[-1]["snapshot"])
    assert snapshot["id"] == skipped and snapshot["source_stage"] == "automatic"
    assert page.inner_text("#fig-masks-good") == "4"
    assert page.inner_text("#fig-masks-bad") == "1"

    # Images: camera.png (its mask verified) and chelsea.png (a person's mask) are ready.
    page.click("#switch-mode")
    page.wait_for_url(re.compile(r"/projects/1/verify/\?mode=exhaustivity$"))
    sent_back = shown(page, "exhaustivity")
    assert sent_back in (images["camera"], images["cat"])
    assert state(page)["masks"] == 1
    page.keyboard.press("n")
    assert state(page)["marking"]
    # A drag pans (0 fits again), a click marks a place; Backspace takes the last one back.
    width, height = (512, 512) if sent_back == images["camera"] else (451, 300)
    page.mouse.move(*at(page, width / 2, height / 2))
    page.mouse.down()
    page.mouse.move(*at(page, width / 2 + 40, height / 2 + 10), steps=5)
    page.mouse.up()
    assert state(page)["points"] == []
    page.keyboard.press("0")
    for x, y in ((width * 0.8, height * 0.3), (width * 0.15, height * 0.85), (10, 10)):
        page.mouse.click(*at(page, x, y))
    page.keyboard.press("Backspace")
    assert len(state(page)["points"]) == 2
    assert page.locator("#point-list li").count() == 2
    page.fill("#note", "the buildings behind")
    page.locator("#note").blur()
    screenshot(page, "verify-image")
    page.keyboard.press("Enter")
    passed = shown(page, "exhaustivity", other_than=sent_back)
    assert not state(page)["marking"] and state(page)["points"] == []
    page.keyboard.press("y")
    wait_for_empty(page)
    page.wait_for_function(
        "() => document.getElementById('fig-images-complete').textContent === '1'"
    )
    assert page.inner_text("#fig-images-sent-back") == "1"

    assert image_state(served, sent_back) == "in_progress"
    assert image_state(served, passed) == "reviewed"  # complete
    checks = rows(
        served,
        "SELECT * FROM annotator_verificationdecision WHERE kind = 'exhaustivity' ORDER BY id",
    )
    assert [(c["image_id"], c["verdict"]) for c in checks] == [(sent_back, "no"), (passed, "yes")]
    points = json.loads(checks[0]["points"])
    assert len(points) == 2 and checks[0]["note"] == "the buildings behind"
    assert abs(points[0][0] - width * 0.8) < 2 and abs(points[0][1] - height * 0.3) < 2
    assert all(c["seconds"] > 0 for c in checks)


# What a reviewer sent back, set up through the engine: astronaut.png's automatic mask judged
# bad, coffee.png checked with two places of missed objects and a note.
SENT_BACK = """
import json
import numpy as np
from django.contrib.auth import get_user_model
from annotator.models import Image, Mask, ModelVersion, Project
from engine import rle, verification

project = Project.objects.get(pk=1)
vera = get_user_model().objects.get(username="vera")
version = project.model_versions.order_by("-number").first()
astronaut = project.images.get(file_name="astronaut.png")
coffee = project.images.get(file_name="coffee.png")
Image.objects.filter(pk__in=[astronaut.pk, coffee.pk]).update(state="annotated")
pixels = np.zeros((astronaut.height, astronaut.width), dtype=bool)
pixels[150:330, 180:340] = True
encoded = rle.from_mask(pixels)
bad = Mask.objects.create(
    image=astronaut, rle_counts=encoded.counts, bbox=rle.bbox(encoded), area=rle.area(encoded),
    source_stage="automatic", model_version=version, predicted_iou=0.9, stability_score=0.96,
)
verification.verify_mask(project, bad.pk, "bad", user=vera, seconds=4.0, note="half a helmet")
verification.check_image(
    project, coffee.pk, "no", user=vera, points=[[120.0, 80.0], [500.0, 300.0]],
    seconds=6.0, note="the spoon and the saucer",
)
print(json.dumps({"astronaut": astronaut.pk, "coffee": coffee.pk, "bad": bad.pk}))
"""


def test_the_annotation_page_shows_what_verification_sent_back(
    browser_page: Any, served: Served, verify_world: dict[str, Any]
) -> None:
    page = browser_page
    sent = served.shell(SENT_BACK)
    log_in(page, served, "otto")

    # The rejected mask: a card that says so, a red line along its edge on the image.
    page.goto(served.url + f"/projects/1/images/{sent['astronaut']}/annotate/")
    # The model ready too: no embedding is left computing when the server stops.
    page.wait_for_function(READY, timeout=120_000)
    card = page.locator("#verification-feedback")
    card.wait_for(timeout=TIMEOUT_MS)
    text = card.inner_text()
    assert f"#{sent['bad']} judged bad by vera" in text and "half a helmet" in text
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    edge = canvas_rgb(page, 260, 150.6)  # just inside the top edge of the rejected box
    assert edge[0] > 170 and edge[1] < 120 and edge[2] < 120, edge
    screenshot(page, "annotate-rejected")

    # The missed objects: orange pins where the reviewer clicked, the note in the card.
    page.goto(served.url + f"/projects/1/images/{sent['coffee']}/annotate/")
    # The model ready too: no embedding is left computing when the server stops.
    page.wait_for_function(READY, timeout=120_000)
    card.wait_for(timeout=TIMEOUT_MS)
    text = card.inner_text()
    assert "2 objects nobody masked, marked by vera" in text
    assert "the spoon and the saucer" in text
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    for x, y in ((120, 80), (500, 300)):
        pin = canvas_rgb(page, x, y, dx=-6.5)  # beside the number
        assert pin[0] > 200 and 80 < pin[1] < 150 and pin[2] < 80, pin  # orange
    screenshot(page, "annotate-hints")
    # Leave the page (its websocket closes, its lease goes back) and let every request end
    # before the server is stopped.
    page.goto(served.url + "/healthz")
    page.wait_for_load_state("networkidle")


READY = "() => window.maskloop && window.maskloop.state().loaded && window.maskloop.state().ready"


def canvas_rgb(page: Any, x: float, y: float, dx: float = 0) -> list[int]:
    """The canvas pixel drawn at image point (x, y), moved dx screen pixels sideways."""
    return list(
        page.evaluate(
            """([x, y, dx]) => {
              const canvas = document.getElementById('canvas');
              const box = canvas.getBoundingClientRect();
              const ratio = canvas.width / box.width;
              const p = window.maskloop.toPage(x, y);
              return Array.from(canvas.getContext('2d').getImageData(
                Math.round((p.x + dx - box.left) * ratio), Math.round((p.y - box.top) * ratio), 1, 1
              ).data).slice(0, 3);
            }""",
            [x, y, dx],
        )
    )

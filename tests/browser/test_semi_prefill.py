"""The semi-automatic stage on the annotation page, in Debian's Chromium: the masks the model
pre-filled on coins.png are drawn apart from people's (lighter, hatched, dashed outline),
tagged in the list with a hint that counts them; an annotator deletes a wrong one and it is
gone from the database; a reviewer sees them but may not delete them."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from tests.browser.conftest import screenshot
from tests.browser.helpers import COINS, collect_errors, database, log_in
from tests.served import Served, serve_platform

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT_MS = 30_000
PREFILLED = 5

# Run in the served platform's own database (manage.py shell): the demo project in the semi
# stage, an annotator and a reviewer, and on coins.png the five largest coins (a watershed
# segmentation, as in scikit-image's coins example) pre-filled by a model version, plus a
# sixth coin anna masked herself (people's masks on a semi project carry the stage too).
SETUP = (
    COINS
    + """
import json
from django.contrib.auth import get_user_model
from annotator.models import Mask, Membership, ModelVersion, Project
from engine import rle

project = Project.objects.get(pk=1)
Project.objects.filter(pk=1).update(stage="semi")
users = {}
for name, role in (("anna", "annotator"), ("rita", "reviewer")):
    users[name] = get_user_model().objects.create_user(name, password="pw-" + name)
    Membership.objects.create(project=project, user=users[name], role=role)
image = project.images.get(file_name="coins.png")
numbers = project.model_versions.values_list("number", flat=True)
version = ModelVersion.objects.create(
    project=project, number=max(numbers, default=0) + 1, state="candidate"
)
masks = []
for n, pixels in enumerate(largest_coins(%(count)d + 1)):
    encoded = rle.from_mask(pixels)
    fields = dict(
        image=image, rle_counts=encoded.counts, bbox=rle.bbox(encoded), area=rle.area(encoded),
        source_stage="semi",
    )
    if n < %(count)d:
        mask = Mask.objects.create(
            **fields, model_version=version, predicted_iou=0.97 - 0.01 * n,
            stability_score=0.98, point_coords=[[10.0, 10.0]],
        )
    else:
        mask = Mask.objects.create(
            **fields, created_by=users["anna"], updated_by=users["anna"], seconds_spent=6,
            clicks=1,
        )
    ys, xs = np.nonzero(pixels)
    masks.append({"id": mask.pk, "centre": [float(xs.mean()), float(ys.mean())]})
print(json.dumps({"image": image.pk, "prefilled": masks[:-1], "own": masks[-1]}))
"""
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """No worker needed: GrabCut answers in the web process, and nothing is queued here."""
    with serve_platform(tmp_path_factory.mktemp("served"), worker=False) as platform:
        yield platform


@pytest.fixture(scope="module")
def world(served: Served) -> dict[str, Any]:
    return served.shell(SETUP % {"count": PREFILLED})


@pytest.fixture
def browser_page(page: Any, served: Served) -> Iterator[Any]:
    """The page must raise no JavaScript error. It leaves the annotation page by navigating
    away, so that the lease's give-back (a keepalive request sent when the page goes) is
    answered before the browser closes: cut off mid-request, it leaves a thread in the
    server that stops the server from exiting at the end of the module."""
    errors = collect_errors(page)
    yield page
    if "/annotate/" in page.url:
        given_back = gave_back(served)
        page.goto(served.url + "/")
        deadline = time.monotonic() + 10
        while gave_back(served) == given_back and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not errors, f"JavaScript errors on the page: {errors}"


def gave_back(served: Served) -> int:
    """How many leases the server has given back (its access log)."""
    return len(re.findall(r'"DELETE /api/projects/\d+/images/\d+/lease/"', served.log.read_text()))


def open_image(page: Any, served: Served, image: int, masks: int) -> None:
    page.goto(f"{served.url}/projects/1/images/{image}/annotate/")
    page.wait_for_function(
        """(n) => {
          const s = window.maskloop && window.maskloop.state();
          return s && s.loaded && s.saved.length === n;
        }""",
        arg=masks,
        timeout=TIMEOUT_MS,
    )


def colour_at(page: Any, x: float, y: float, radius: int = 4) -> list[float]:
    """The mean RGB of the drawn canvas around image pixel (x, y)."""
    page.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    return list(
        page.evaluate(
            """([x, y, r]) => {
              const canvas = document.getElementById("canvas");
              const box = canvas.getBoundingClientRect();
              const p = window.maskloop.toPage(x, y);
              const ratio = canvas.width / box.width;
              const cx = Math.round((p.x - box.left) * ratio);
              const cy = Math.round((p.y - box.top) * ratio);
              const side = 2 * r + 1;
              const data = canvas.getContext("2d").getImageData(cx - r, cy - r, side, side).data;
              const sum = [0, 0, 0];
              for (let i = 0; i < data.length; i += 4) {
                for (let c = 0; c < 3; c += 1) sum[c] += data[i + c];
              }
              return sum.map((v) => v / (side * side));
            }""",
            [x, y, radius],
        )
    )


def tint(page: Any, centre: list[float]) -> float:
    """How much the masks' overlay changes the photo at a point (H hides and shows them)."""
    shown = colour_at(page, *centre)
    page.keyboard.press("h")
    bare = colour_at(page, *centre)
    page.keyboard.press("h")
    return sum(abs(a - b) for a, b in zip(shown, bare, strict=True))


def deleted(served: Served, mask: int) -> bool:
    with closing(database(served)) as db:
        return db.execute("SELECT id FROM annotator_mask WHERE id = ?", [mask]).fetchone() is None


def test_pre_filled_masks_are_drawn_apart_and_a_wrong_one_is_deleted(
    browser_page: Any, served: Served, world: dict[str, Any]
) -> None:
    page = browser_page
    prefilled = world["prefilled"]
    own = world["own"]
    log_in(page, served, "anna")
    open_image(page, served, world["image"], PREFILLED + 1)
    page.locator("#stage").focus()

    state = page.evaluate("window.maskloop.state()")
    flags = {m["id"]: m["prefilled"] for m in state["saved"]}
    assert flags == {**{m["id"]: True for m in prefilled}, own["id"]: False}
    assert page.is_visible("#prefill-hint")
    assert page.inner_text("#prefill-hint") == (
        f"{PREFILLED} masks pre-filled by the model: delete wrong ones, add the missing objects."
    )

    # The list tags them; anna may delete them (and edit only her own).
    for mask in prefilled:
        item = page.locator(f"#mask-list li[data-mask-id='{mask['id']}']")
        assert "prefilled" in str(item.get_attribute("class"))
        assert item.locator(".prefilled-tag").inner_text() == "pre-filled"
        assert item.locator(".mask-meta").inner_text().startswith("model · ")
        assert item.get_by_role("button", name=f"Delete mask {mask['id']}").count() == 1
        assert item.get_by_role("button", name=f"Edit mask {mask['id']}").count() == 0
    mine = page.locator(f"#mask-list li[data-mask-id='{own['id']}']")
    assert "prefilled" not in str(mine.get_attribute("class"))
    assert mine.locator(".prefilled-tag").count() == 0
    assert mine.get_by_role("button", name=f"Edit mask {own['id']}").count() == 1

    # On the image: the pre-filled masks tint the photo much less than anna's own mask.
    light = [tint(page, mask["centre"]) for mask in prefilled]
    solid = tint(page, own["centre"])
    assert solid > 30, solid
    assert max(light) < 0.7 * solid, (light, solid)
    assert min(light) > 3, light  # but they are drawn
    screenshot(page, "annotate-prefilled")

    # A wrong one goes: the bin, armed, then confirmed.
    wrong = prefilled[0]["id"]
    remove = page.get_by_role("button", name=f"Delete mask {wrong}")
    remove.click()
    assert "armed" in str(remove.get_attribute("class"))
    remove.click()
    page.wait_for_function(
        "(n) => window.maskloop.state().saved.length === n", arg=PREFILLED, timeout=TIMEOUT_MS
    )
    assert page.inner_text("#status-message") == f"Deleted mask #{wrong}."
    assert page.locator(f"#mask-list li[data-mask-id='{wrong}']").count() == 0
    assert page.inner_text("#prefill-count") == f"{PREFILLED - 1} masks"
    assert deleted(served, wrong)
    assert not any(deleted(served, m["id"]) for m in prefilled[1:])

    # The page reloaded: the deletion holds, the others are still pre-filled.
    open_image(page, served, world["image"], PREFILLED)
    assert page.locator("#mask-list li.prefilled").count() == PREFILLED - 1


def test_a_reviewer_sees_pre_filled_masks_but_may_not_delete_them(
    browser_page: Any, served: Served, world: dict[str, Any]
) -> None:
    page = browser_page
    log_in(page, served, "rita")
    remaining = [m["id"] for m in world["prefilled"] if not deleted(served, m["id"])]
    open_image(page, served, world["image"], len(remaining) + 1)
    assert page.locator("#mask-list li.prefilled").count() == len(remaining)
    assert page.is_visible("#prefill-hint")
    assert page.locator("#mask-list li.prefilled button.danger").count() == 0


def test_an_image_without_pre_filled_masks_shows_no_hint(
    browser_page: Any, served: Served, world: dict[str, Any]
) -> None:
    page = browser_page
    log_in(page, served, "anna")
    other = world["image"] - 1  # another demo photo, with no mask
    page.goto(f"{served.url}/projects/1/images/{other}/annotate/")
    page.wait_for_function("window.maskloop && window.maskloop.state().loaded", timeout=TIMEOUT_MS)
    page.wait_for_function("!document.querySelector('#mask-empty').hidden", timeout=TIMEOUT_MS)
    assert not page.is_visible("#prefill-hint")

"""The "HQ" toggle of the annotation page, in Debian's Chromium: shown only when the promoted
version has HQ-SAM's head; on, a click answers with the HQ mask (one candidate); Q turns it
off and the same prompt is answered by the base model (three candidates for one point); the
choice survives a reload. A plain version shows no toggle."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import screenshot
from tests.browser.test_semi_prefill import browser_page, log_in, open_image
from tests.served import Served, serve_platform

pytestmark = [pytest.mark.browser, pytest.mark.slow]

__all__ = ["browser_page"]  # the fixture, used by name

TIMEOUT_MS = 30_000

# A promoted version in the demo project (a random-weight tiny model: what matters here is
# which head answers, not how well), and an annotator.
SETUP = """
import json, tempfile
from pathlib import Path
from django.contrib.auth import get_user_model
from annotator.models import Membership, Project
from engine import versions
from tests.annotator.fixtures import tiny_checkpoint

project = Project.objects.get(pk=1)
if not Membership.objects.filter(user__username="anna").exists():
    anna = get_user_model().objects.create_user("anna", password="pw-anna")
    Membership.objects.create(project=project, user=anna, role="annotator")
path = Path(tempfile.mkdtemp()) / "%(name)s.pth"
path.write_bytes(tiny_checkpoint("%(name)s"))
version = versions.add_checkpoint(project, path)
versions.promote(version)
image = project.images.get(file_name="coins.png")
print(json.dumps({"image": image.pk, "version": version.number}))
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_platform(tmp_path_factory.mktemp("served"), worker=False) as platform:
        yield platform


def click_and_wait(page: Any, x: float, y: float) -> dict[str, Any]:
    point = page.evaluate(f"window.maskloop.toPage({x}, {y})")
    page.mouse.click(point["x"], point["y"])
    return wait_for_answer(page)


def wait_for_answer(page: Any) -> dict[str, Any]:
    page.wait_for_function(
        """() => {
          const s = window.maskloop.state();
          return !s.pending && s.candidates.length > 0;
        }""",
        timeout=TIMEOUT_MS,
    )
    return dict(page.evaluate("window.maskloop.state()"))


def test_the_hq_toggle_switches_between_the_hq_head_and_the_base_model(
    browser_page: Any, served: Served
) -> None:
    page = browser_page
    world = served.shell(SETUP % {"name": "vit_tiny_test_hq"})
    log_in(page, served, "anna")
    open_image(page, served, world["image"], 0)
    page.wait_for_function("window.maskloop.state().ready", timeout=TIMEOUT_MS)
    assert page.is_visible("#hq-toggle")
    assert page.get_attribute("#hq-toggle", "aria-pressed") == "true"
    assert "(HQ-SAM)" in page.inner_text("#status-model-text")

    on = click_and_wait(page, 100, 100)
    assert on["hq"] is True and len(on["candidates"]) == 1  # SAM's best + the HQ mask

    page.locator("#stage").focus()
    page.keyboard.press("q")
    page.wait_for_function(
        "(s => !s.pending && s.candidates.length === 3)(window.maskloop.state())",
        timeout=TIMEOUT_MS,
    )
    off = dict(page.evaluate("window.maskloop.state()"))
    assert off["hq"] is False and off["points"] == on["points"]
    assert page.get_attribute("#hq-toggle", "aria-pressed") == "false"
    screenshot(page, "annotate-hq-off")

    # The choice is the annotator's: it stays after a reload.
    open_image(page, served, world["image"], 0)
    page.wait_for_function("window.maskloop.state().ready", timeout=TIMEOUT_MS)
    assert page.evaluate("window.maskloop.state().hq") is False
    page.click("#hq-toggle")
    assert page.get_attribute("#hq-toggle", "aria-pressed") == "true"


def test_a_plain_version_shows_no_hq_toggle(browser_page: Any, served: Served) -> None:
    page = browser_page
    world = served.shell(SETUP % {"name": "vit_tiny_test"})
    log_in(page, served, "anna")
    open_image(page, served, world["image"], 0)
    page.wait_for_function("window.maskloop.state().ready", timeout=TIMEOUT_MS)
    assert page.is_hidden("#hq-toggle")
    state = click_and_wait(page, 100, 100)
    assert state["hq"] is None and len(state["candidates"]) == 3
    page.keyboard.press("q")  # nothing to toggle: nothing happens
    assert page.evaluate("window.maskloop.state().candidates.length") == 3

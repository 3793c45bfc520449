"""A web process restarted under an annotator: the page says it is reconnecting, comes back
by itself with the draft it had, and the next click is answered by the new process.

The restart is what a deploy does: SIGTERM to ``manage.py serve`` (daphne closes the sockets
with the restart hint, annotator/ws/shutdown.py), then the same command on the same port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest

from tests.browser.helpers import DEMO_PASSWORD, collect_errors, log_in
from tests.served import ROOT, SERVICE_VARIABLES, Served, serve_platform

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CUP = (290, 140)  # pixels of the demo's coffee.png: inside the cup, and on the saucer
SAUCER = (200, 330)
TIMEOUT_MS = 60_000
MODEL_STATE = "() => document.getElementById('status-model').dataset.state"


def state(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("window.maskloop.state()"))


def click_image(page: Any, x: float, y: float, *, button: str = "left") -> None:
    point = page.evaluate(f"window.maskloop.toPage({x}, {y})")
    page.mouse.click(point["x"], point["y"], button=button)
    page.wait_for_function("() => !window.maskloop.state().pending", timeout=TIMEOUT_MS)


def serve_again(served: Served) -> subprocess.Popen[bytes]:
    """The same platform (data dir, port) started again, as after a deploy."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update({"MASKLOOP_DATA_DIR": str(served.data_dir), "MASKLOOP_STARTER_CHECKPOINT": "none"})
    port = served.url.rsplit(":", 1)[1]
    with (served.data_dir / "serve-again.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", port, "--no-worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_the_page_reconnects_after_a_server_restart_and_keeps_the_draft(
    page: Any, tmp_path: Any
) -> None:
    errors = collect_errors(page)
    with serve_platform(tmp_path / "data", worker=False) as served:
        log_in(page, served, "admin", DEMO_PASSWORD)
        page.goto(served.url + "/projects/1/")
        page.locator(".tile:has-text('coffee.png') a.annotate-link").click()
        page.wait_for_url(re.compile(r"/projects/1/images/\d+/annotate/$"))
        page.wait_for_function(
            "() => window.maskloop.state().ready && window.maskloop.state().loaded",
            timeout=TIMEOUT_MS,
        )
        click_image(page, *CUP)
        before = state(page)
        assert before["area"] > 1000

        # The deploy stops the server: the page is told, and says so.
        served.process.terminate()
        assert served.process.wait(timeout=30) == 0
        page.wait_for_function(f"() => ({MODEL_STATE})() === 'reconnecting'", timeout=10_000)
        assert "restarting" in page.inner_text("#status-model-text")

        again = serve_again(served)
        try:
            # ... and comes back by itself once the new process listens.
            page.wait_for_function(f"() => ({MODEL_STATE})() === 'ready'", timeout=TIMEOUT_MS)
            after = state(page)
            assert after["points"] == before["points"] and after["area"] == before["area"]

            # The new process answers the next click, refining the same draft.
            click_image(page, *SAUCER, button="right")
            refined = state(page)
            assert [p["label"] for p in refined["points"]] == [1, 0]
            assert refined["area"] > 0
            assert re.search(r"\d+ ms round trip", page.inner_text("#status-rtt"))
        finally:
            again.terminate()
            again.wait(timeout=30)
    assert not errors, f"JavaScript errors on the page: {errors}"

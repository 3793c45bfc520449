"""A new user's first visit, in Debian's Chromium: log in, see the demo project and its photos."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import screenshot
from tests.served import Served

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def log_in(page: Any, served: Served, password: str = "maskloop-demo") -> None:
    page.goto(served.url + "/")
    assert "/login/" in page.url
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_the_demo_admin_logs_in_and_sees_the_demo_photos(page: Any, served: Served) -> None:
    log_in(page, served)
    page.wait_for_selector("table.list")
    screenshot(page, "project-list")
    link = page.get_by_role("link", name="Demo: scikit-image photos")
    assert link.is_visible()
    link.click()
    page.wait_for_selector(".gallery .tile img")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.gallery img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    tiles = page.locator(".gallery .tile")
    assert tiles.count() >= 6
    assert "astronaut.png" in page.inner_text(".gallery")
    assert page.inner_text("#stat-images").strip() == str(tiles.count())
    screenshot(page, "project-detail")


def test_a_wrong_password_is_told_and_nothing_is_shown(page: Any, served: Served) -> None:
    log_in(page, served, password="wrong")
    assert (
        page.get_by_role("alert").inner_text().startswith("Your username and password didn't match")
    )
    page.goto(served.url + "/projects/1/")
    assert "/login/" in page.url

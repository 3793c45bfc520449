"""What the browser tests share: logging in, reading the served platform's SQLite file, and
the demo's coins as masks."""

from __future__ import annotations

import sqlite3
from typing import Any

from tests.served import Served

# Code for a served platform's shell (Served.shell): ``largest_coins(n)`` gives the n largest
# coins of the demo's coins.png as boolean masks, largest first (a watershed segmentation, as
# in scikit-image's coins example). A page test's SETUP starts with it.
COINS = """
import numpy as np
from scipy import ndimage as ndi
from skimage import data, filters, segmentation

def largest_coins(count):
    coins = data.coins()
    markers = np.zeros_like(coins)
    markers[coins < 30] = 1
    markers[coins > 150] = 2
    found = ndi.binary_fill_holes(segmentation.watershed(filters.sobel(coins), markers) == 2)
    labels, _ = ndi.label(found)
    order = np.argsort(np.bincount(labels.ravel())[1:])[::-1][:count] + 1
    return [labels == label for label in order]
"""


DEMO_PASSWORD = "maskloop-demo"  # the demo admin's, set by setup_demo


def collect_errors(page: Any) -> list[str]:
    """The page's JavaScript errors from now on (a test asserts the list stays empty)."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def log_in(page: Any, served: Served, username: str, password: str | None = None) -> None:
    """Log in as ``username`` (password ``pw-<username>`` unless given), from a fresh session."""
    page.context.clear_cookies()
    page.goto(served.url + "/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password if password is not None else "pw-" + username)
    page.click("button[type=submit]")
    page.wait_for_url(served.url + "/")


def database(served: Served) -> sqlite3.Connection:
    """The served platform's own database file, rows by column name."""
    connection = sqlite3.connect(served.data_dir / "maskloop.sqlite3", timeout=30)
    connection.row_factory = sqlite3.Row
    return connection

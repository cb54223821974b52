"""Debian's headless Chromium, driven by Playwright, for the tests of the demo page."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

CHROMIUM = Path("/usr/bin/chromium")

# The machine has no internet: Chromium's own background traffic (updates,
# sync, QUIC probes) would only wait on timeouts and make the tests slow.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing_chromium() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (bin/install-chromium installs it)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (it is in requirements-dev.txt)"
    return None


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, never a browser Playwright would download.

    Playwright starts it with a fresh, temporary profile (user-data dir) of its
    own, removed when the browser closes; each ``new_context()`` is a separate
    person with their own storage.
    """
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )

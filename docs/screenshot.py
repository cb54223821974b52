"""Takes docs/demo.png: the demo chat page in use, in headless Chromium.

Run from the project root with the dev tools installed (``make test`` installs
them) and Chromium present (``bin/install-chromium``)::

    .venv/bin/python -m docs.screenshot

It serves the Procfile's gunicorn on a throw-away SQLite database, posts a
short conversation through the API, and photographs one side of it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from harness.browser import launch_chromium, missing_chromium
from harness.processes import PROJECT, live_server, manage, server_environment

OUTPUT = PROJECT / "docs" / "demo.png"
CONVERSATION = "tea-room"
EARLIER = [
    ("grace", "Morning! Is anyone else in the tea room?"),
    ("ada", "Here. The kettle has just boiled."),
]
VIEWPORT = {"width": 720, "height": 560}


def main() -> None:
    if reason := missing_chromium():
        sys.exit(f"Cannot take the screenshot: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        env = server_environment(f"sqlite:///{tmp}/demo.sqlite3")
        collected = manage(env, "collectstatic", "--noinput")
        if collected.returncode:
            sys.exit(collected.stderr)
        with live_server(env, Path(tmp) / "gunicorn.log") as server, sync_playwright() as pw:
            for sender, text in EARLIER:
                message = {"sender": sender, "conversation_id": CONVERSATION, "message": text}
                assert server.request("POST", "/messages/", message).status == 201
            browser = launch_chromium(pw)
            page = browser.new_page(
                base_url=f"http://{server.host}:{server.port}", viewport=VIEWPORT
            )
            page.goto("/")
            page.get_by_label("Conversation").fill(CONVERSATION)
            page.get_by_label("Your name").fill("ada")
            page.get_by_role("button", name="Join").click()
            page.get_by_role("textbox", name="Message").fill("Milk first, or <tea> first?")
            page.get_by_role("button", name="Send").click()
            expect(page.locator("#messages .text")).to_have_count(3)
            expect(page.locator("#messages li.mine .state").last).to_have_text("Sent")
            page.screenshot(path=OUTPUT)
            browser.close()
    print(f"Wrote {OUTPUT.relative_to(PROJECT)} ({OUTPUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()

"""The demo chat page at ``/``: served by the app, and driven in real headless Chromium.

The browser tests run the Procfile's gunicorn on a fresh database and use the
page as people would, two of them at once. They are skipped, with the reason,
where Debian's Chromium or Playwright is not installed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from api.errors import ServiceUnavailable, problem
from harness.browser import launch_chromium, missing_chromium
from harness.databases import fresh_database
from harness.processes import LiveServer, live_server, manage, server_environment

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the browser tests are skipped, saying why
    expect = sync_playwright = None

SEEN_WITHIN_MS = 5_000
PHONE = {"width": 375, "height": 667}

needs_chromium = pytest.mark.skipif(
    missing_chromium() is not None, reason=f"needs headless Chromium: {missing_chromium()}"
)


def test_the_root_url_serves_the_chat_page_with_its_script_and_styles_as_files(client: Client):
    response = client.get("/")
    html = response.content.decode()

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert '<script src="/static/demo/chat.js" defer></script>' in html
    assert '<link rel="stylesheet" href="/static/demo/chat.css">' in html
    # A Content-Security-Policy without 'unsafe-inline' must not break it.
    assert not re.search(r"<script>|<style|\son[a-z]+=|\sstyle=", html)
    assert finders.find("demo/chat.js") and finders.find("demo/chat.css")


def test_the_chat_page_labels_its_controls_for_screen_readers(client: Client):
    html = client.get("/").content.decode()

    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    for control in ("conversation", "name", "message"):
        assert f'<label for="{control}">' in html
        assert f'id="{control}"' in html
    assert 'role="log" aria-live="polite"' in html
    assert 'role="alert"' in html


def test_the_root_url_serves_only_reads(client: Client):
    assert client.post("/").status_code == 405


# The browser, the server and the database live for the whole module: starting
# them is most of the cost, and each test uses conversations of its own.


@pytest.fixture(scope="module")
def server(tmp_path_factory, django_db_blocker) -> Iterator[LiveServer]:
    if missing_chromium():
        pytest.skip(f"needs headless Chromium: {missing_chromium()}")
    with (
        django_db_blocker.unblock(),
        fresh_database(tmp_path_factory.mktemp("db")) as database_url,
    ):
        env = server_environment(database_url)
        # As a deploy does: with debug off, whitenoise serves collected files.
        collected = manage(env, "collectstatic", "--noinput")
        assert collected.returncode == 0, collected.stderr
        with live_server(env, tmp_path_factory.mktemp("log") / "gunicorn.log") as running:
            yield running


@pytest.fixture(scope="module")
def browser(server):
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def person(browser, server):
    """Opens the page as a new person (own storage); closed after the test."""
    contexts = []

    def open_page(viewport: dict | None = None):
        context = browser.new_context(
            base_url=f"http://{server.host}:{server.port}", viewport=viewport
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page.goto("/")
        return page

    yield open_page
    for context in contexts:
        context.close()


def join(page, conversation: str, name: str) -> None:
    page.get_by_label("Conversation").fill(conversation)
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Join").click()
    expect(page.locator("#status")).to_have_text(
        f"Connected to conversation {conversation} as {name}."
    )


def say(page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()


def shown(page) -> list[str]:
    return page.locator("#messages .text").all_text_contents()


def stored(server: LiveServer, conversation: str) -> list[dict]:
    answer = server.request("GET", f"/conversations/{conversation}?limit=1000")
    return answer.json()["messages"]


@needs_chromium
def test_two_people_in_one_conversation_each_see_the_others_message(server, person):
    ada, grace = person(), person()
    join(ada, "tea-room", "ada")
    join(grace, "tea-room", "grace")

    say(ada, "Is the kettle on?")
    say(grace, "It is <b>now</b> & ready")

    for page in (ada, grace):
        expect(page.locator("#messages .text")).to_have_text(
            ["Is the kettle on?", "It is <b>now</b> & ready"], timeout=SEEN_WITHIN_MS
        )
        expect(page.locator("#messages .sender")).to_have_text(["ada", "grace"])
    # Markup someone typed stays text.
    assert grace.locator("#messages b").count() == 0
    assert [m["message"] for m in stored(server, "tea-room")] == [
        "Is the kettle on?",
        "It is <b>now</b> & ready",
    ]


@needs_chromium
def test_load_older_pages_back_through_the_whole_history_in_order(server, person):
    texts = [f"message {n}" for n in range(1, 251)]
    for text in texts:
        posted = server.request(
            "POST", "/messages/", {"sender": "bot", "conversation_id": "long", "message": text}
        )
        assert posted.status == 201
    reader = person()

    join(reader, "long", "reader")
    expect(reader.locator("#messages .text")).to_have_count(100)
    assert shown(reader) == texts[-100:]
    older = reader.get_by_role("button", name="Load older messages")
    clicks = 0
    while older.is_visible():
        before = len(shown(reader))
        older.click()
        expect(reader.locator("#messages .text")).not_to_have_count(before)
        clicks += 1

    assert clicks == 2
    assert shown(reader) == texts
    expect(reader.locator("#status")).to_have_text("This is the start of the conversation.")


@needs_chromium
def test_an_api_error_is_shown_to_the_person_in_words_and_nothing_is_stored(server, person):
    page = person()
    join(page, "too-long", "verbose")

    say(page, "x" * 10_001)

    expect(page.get_by_role("alert")).to_have_text(
        "Could not send your message: Message: Ensure this field has no more than 10000 characters."
    )
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    assert page.get_by_role("textbox", name="Message").input_value() == "x" * 10_001
    assert stored(server, "too-long") == []


@needs_chromium
def test_a_double_click_on_send_posts_the_message_once(server, person):
    page = person()
    join(page, "double", "eager")
    posts = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r))

    page.get_by_role("textbox", name="Message").fill("only once")
    page.get_by_role("button", name="Send").dblclick()

    expect(page.locator("#messages .text")).to_have_text(["only once"])
    assert len(posts) == 1
    assert [m["message"] for m in stored(server, "double")] == ["only once"]


@needs_chromium
def test_a_send_whose_answer_is_lost_is_retried_with_the_same_idempotency_key(server, person):
    """The POST reaches the server but its answer never reaches the page."""
    page = person()
    join(page, "flaky", "hopeful")
    keys = []

    def lose_the_first_answer(route):
        keys.append(route.request.headers["idempotency-key"])
        if len(keys) == 1:
            route.fetch()
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/messages/", lose_the_first_answer)
    say(page, "did this arrive?")
    expect(page.get_by_role("alert")).to_have_text(
        "Could not send your message: The server could not be reached; check your connection. "
        "Press Send to try again."
    )
    with page.expect_response("**/messages/") as retried:
        page.get_by_role("button", name="Send").click()
    expect(page.locator("#status")).to_have_text(re.compile(r"^Sent"))

    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", keys[0]
    )
    # Where the server honours the key, the retry stores nothing new.
    replayed = retried.value.headers.get("idempotent-replayed") == "true"
    assert len(stored(server, "flaky")) == (1 if replayed else 2)


@needs_chromium
def test_a_new_message_gets_a_new_idempotency_key(server, person):
    page = person()
    join(page, "keys", "typist")
    keys = []
    page.on("request", lambda r: r.method == "POST" and keys.append(r.headers["idempotency-key"]))

    say(page, "one")
    expect(page.locator("#messages .text")).to_have_text(["one"])
    say(page, "one")
    expect(page.locator("#messages .text")).to_have_text(["one", "one"])

    assert len(set(keys)) == 2


@needs_chromium
def test_polling_asks_with_the_last_etag_and_a_304_changes_nothing(server, person):
    page = person()
    polls = []
    page.on(
        "response",
        lambda r: (
            "after=" in r.url and polls.append((r.request.headers.get("if-none-match"), r.status))
        ),
    )

    join(page, "quiet", "listener")
    page.wait_for_timeout(6_500)

    assert len(polls) >= 2
    assert polls[0][1] == 200
    assert all(etag is not None and status == 304 for etag, status in polls[1:])
    assert shown(page) == []


@needs_chromium
def test_a_poll_that_finds_more_than_a_page_follows_next_at_once(server, person):
    page = person()
    # The page's timers run only when the test moves its clock on.
    page.clock.install()
    page.reload()
    page.clock.pause_at(datetime.now(UTC) + timedelta(seconds=1))
    join(page, "burst", "watcher")
    texts = [f"burst {n}" for n in range(1, 231)]
    for text in texts:
        message = {"sender": "crowd", "conversation_id": "burst", "message": text}
        assert server.request("POST", "/messages/", message).status == 201

    page.clock.run_for(2_000)

    expect(page.locator("#messages .text")).to_have_count(230)
    assert shown(page) == texts


@needs_chromium
def test_a_503_while_polling_is_shown_and_the_page_retries_when_told(server, person):
    """A database outage is hard to stage under a shared live server, so the
    browser is handed the answer the service gives in one, built by its own code."""
    page = person()
    join(page, "outage", "patient")
    outage = json.dumps(problem(503, str(ServiceUnavailable.default_detail)))
    answered = []

    def database_down_once(route):
        if answered:
            route.continue_()
            return
        answered.append(route.request.url)
        route.fulfill(
            status=503,
            headers={"Retry-After": "1", "Content-Type": "application/problem+json"},
            body=outage,
        )

    page.route("**/conversations/outage?after=*", database_down_once)

    expect(page.get_by_role("alert")).to_have_text(
        "Could not check for new messages: The database is not answering; try again shortly. "
        "Trying again in 1 s."
    )
    expect(page.get_by_role("alert")).to_be_hidden(timeout=SEEN_WITHIN_MS)
    expect(page.locator("#status")).to_have_text("Connected to conversation outage as patient.")


@needs_chromium
def test_a_conversation_that_fails_to_load_is_loaded_when_the_server_answers_again(server, person):
    message = {"sender": "early", "conversation_id": "late-start", "message": "hello?"}
    assert server.request("POST", "/messages/", message).status == 201
    page = person()
    lost = []

    def lose_the_first_load(route):
        if lost:
            route.continue_()
        else:
            lost.append(route.request.url)
            route.abort("connectionrefused")

    page.route("**/conversations/late-start", lose_the_first_load)
    page.get_by_label("Conversation").fill("late-start")
    page.get_by_label("Your name").fill("late")
    page.get_by_role("button", name="Join").click()

    expect(page.get_by_role("alert")).to_have_text(
        "Could not load conversation late-start: The server could not be reached; "
        "check your connection. Trying again shortly."
    )
    expect(page.locator("#messages .text")).to_have_text(["hello?"], timeout=SEEN_WITHIN_MS)
    expect(page.get_by_role("alert")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("Connected to conversation late-start as late.")


@needs_chromium
def test_the_page_fits_a_phone_screen(server, person):
    page = person(viewport=PHONE)
    join(page, "pocket", "thumbs")
    say(page, "A long line without spaces: " + "y" * 300)
    expect(page.locator("#messages .text")).to_have_count(1)

    width = page.evaluate("document.documentElement.scrollWidth")
    send = page.get_by_role("button", name="Send").bounding_box()
    assert width <= PHONE["width"]
    assert send["x"] + send["width"] <= PHONE["width"]
    assert send["y"] + send["height"] <= PHONE["height"]


@needs_chromium
def test_the_conversation_and_name_are_remembered_on_the_next_visit(server, person):
    page = person()
    join(page, "again", "regular")

    page.reload()

    expect(page.get_by_label("Conversation")).to_have_value("again")
    expect(page.get_by_label("Your name")).to_have_value("regular")
    expect(page.locator("#status")).to_have_text("Connected to conversation again as regular.")

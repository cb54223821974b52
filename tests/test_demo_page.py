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
from harness.processes import (
    LiveServer,
    RestartableServer,
    live_server,
    manage,
    release,
    server_environment,
)

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the browser tests are skipped, saying why
    expect = sync_playwright = None

SEEN_WITHIN_MS = 5_000
PHONE = {"width": 375, "height": 667}


def needs_chromium(test):
    """A test in headless Chromium: skipped, saying why, where it is missing, and
    marked ``browser`` so that ``make test-fast`` can leave it out."""
    skip = pytest.mark.skipif(
        missing_chromium() is not None, reason=f"needs headless Chromium: {missing_chromium()}"
    )
    return pytest.mark.browser(skip(test))


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


# The browser, the servers and the database live for the whole module: starting
# them is most of the cost, and each test uses conversations of its own.


@pytest.fixture(scope="module")
def site(tmp_path_factory, django_db_blocker) -> Iterator[dict[str, str]]:
    """The servers' environment: a fresh, migrated and seeded database, files collected."""
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
        release(env)
        seeded = manage(env, "seed_demo")
        assert seeded.returncode == 0, seeded.stderr
        yield env


# The WSGI application alone, under gunicorn's threads, as the web process ran
# before live delivery: a server with no event stream.
WSGI_ONLY = [
    "gunicorn",
    "chatproject.wsgi",
    "--config",
    "gunicorn.conf.py",
    "--worker-class",
    "gthread",
]


@pytest.fixture(scope="module")
def server(site, tmp_path_factory) -> Iterator[LiveServer]:
    """A server with no event stream (the events path is a 404), so the page polls,
    as it does behind any server or proxy that cannot stream."""
    wsgi = RestartableServer(site, tmp_path_factory.mktemp("log") / "gunicorn.log")
    wsgi.command = [*WSGI_ONLY, "--bind", f"127.0.0.1:{wsgi.port}"]
    try:
        yield wsgi.start()
    finally:
        wsgi.stop()


@pytest.fixture(scope="module")
def streaming(site, tmp_path_factory) -> Iterator[LiveServer]:
    """The Procfile's web process: the page is live on its event stream. Same
    database as ``server``."""
    with live_server(site, tmp_path_factory.mktemp("log") / "web.log") as running:
        yield running


@pytest.fixture(scope="module")
def browser(site):
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def person(browser, server):
    """Opens the page as a new person (own storage), on ``server`` unless told
    another; closed after the test."""
    contexts = []

    def open_page(viewport: dict | None = None, on: LiveServer | None = None, init: str = ""):
        on = on or server
        context = browser.new_context(base_url=f"http://{on.host}:{on.port}", viewport=viewport)
        context.set_default_timeout(10_000)
        if init:
            context.add_init_script(init)
        contexts.append(context)
        page = context.new_page()
        page.goto("/")
        return page

    yield open_page
    for context in contexts:
        context.close()


def join(page, conversation: str, name: str, connection: str = "polling") -> None:
    page.get_by_label("Conversation").fill(conversation)
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Join").click()
    expect(page.locator("#joined")).to_have_text(f"{conversation} as {name} · change")
    expect(page.locator("#connection")).to_have_text(connection)


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

    for page, senders in ((ada, ["You", "grace"]), (grace, ["ada", "You"])):
        expect(page.locator("#messages .text")).to_have_text(
            ["Is the kettle on?", "It is <b>now</b> & ready"], timeout=SEEN_WITHIN_MS
        )
        expect(page.locator("#messages .sender")).to_have_text(senders)
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
    # From the keyboard, which does not scroll (scrolling up loads them by itself).
    older = reader.get_by_role("button", name="Load older messages")
    presses = 0
    while older.is_visible():
        before = len(shown(reader))
        older.evaluate("(button) => button.focus({preventScroll: true})")
        reader.keyboard.press("Enter")
        expect(reader.locator("#messages .text")).not_to_have_count(before)
        presses += 1

    assert presses == 2

    assert shown(reader) == texts
    expect(reader.get_by_text("This is the start of the conversation.")).to_be_visible()


@needs_chromium
def test_an_api_error_is_shown_to_the_person_in_words_and_nothing_is_stored(server, person):
    page = person()
    join(page, "too-long", "verbose")

    say(page, "x" * 10_001)

    expect(page.locator("#send-error")).to_have_text(
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
    # The bubble shows before the POST is answered: wait for the answer.
    expect(page.locator("#messages li.mine .state")).to_have_text("Sent")
    assert len(posts) == 1
    assert [m["message"] for m in stored(server, "double")] == ["only once"]


@needs_chromium
def test_a_send_whose_answer_is_lost_is_retried_by_itself_with_the_same_idempotency_key(
    server, person
):
    """The POST reaches the server but its answer never reaches the page."""
    page = person()
    join(page, "flaky", "hopeful")
    keys = []
    replays = []

    def lose_the_first_answer(route):
        keys.append(route.request.headers["idempotency-key"])
        if len(keys) == 1:
            route.fetch()
            route.abort("connectionreset")
        else:
            answer = route.fetch()
            replays.append(answer.headers.get("idempotent-replayed"))
            route.fulfill(response=answer)

    page.route("**/messages/", lose_the_first_answer)
    say(page, "did this arrive?")
    bubble = page.locator("#messages li.mine")
    expect(bubble).to_contain_text("Not sent · Retry")
    # The next answer from the server is the cue to send it again.
    expect(bubble).to_have_count(1, timeout=SEEN_WITHIN_MS)
    expect(bubble.locator(".state")).to_have_text("Sent", timeout=SEEN_WITHIN_MS)

    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", keys[0]
    )
    assert replays == ["true"]
    assert [m["message"] for m in stored(server, "flaky")] == ["did this arrive?"]
    expect(page.locator("#messages .text")).to_have_text(["did this arrive?"])


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
    expect(page.locator("#messages li.mine.sent")).to_have_count(2)

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

    expect(page.locator("#connection-error")).to_have_text(
        "Could not check for new messages: The database is not answering; try again shortly. "
        "Trying again in 1 s."
    )
    expect(page.locator("#connection-error")).to_be_hidden(timeout=SEEN_WITHIN_MS)
    expect(page.locator("#connection")).to_have_text("polling")


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

    expect(page.locator("#connection-error")).to_have_text(
        "Could not load conversation late-start: The server could not be reached; "
        "check your connection. Trying again shortly."
    )
    expect(page.locator("#messages .text")).to_have_text(["hello?"], timeout=SEEN_WITHIN_MS)
    expect(page.locator("#connection-error")).to_be_hidden()
    expect(page.locator("#connection")).to_have_text("polling")


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
    expect(page.locator("#joined")).to_have_text("again as regular · change")


# The scroll container of an element: the nearest ancestor that scrolls.
SCROLLER_OF = """(element) => {
  for (let node = element.parentElement; node; node = node.parentElement) {
    const overflow = getComputedStyle(node).overflowY;
    if ((overflow === "auto" || overflow === "scroll") && node.scrollHeight > node.clientHeight)
      return node;
  }
  return document.scrollingElement;
}"""

DESKTOP = {"width": 1280, "height": 800}


def post_many(server: LiveServer, conversation: str, texts: list[str], sender: str = "bot"):
    for text in texts:
        message = {"sender": sender, "conversation_id": conversation, "message": text}
        assert server.request("POST", "/messages/", message).status == 201


def top_of(page, text: str) -> float:
    return page.locator("#messages .text", has_text=re.compile(f"^{text}$")).bounding_box()["y"]


@needs_chromium
def test_loading_older_messages_keeps_the_reader_where_they_were(server, person):
    post_many(server, "steady", [f"message {n}" for n in range(1, 151)])
    reader = person()
    join(reader, "steady", "reader")
    expect(reader.locator("#messages .text")).to_have_count(100)

    # Scrolled to the very top, the reader asks for more (in one go, so
    # nothing else can load them first).
    first = reader.locator("#messages .text", has_text=re.compile("^message 51$"))
    before = first.evaluate(
        f"""(text) => {{
          ({SCROLLER_OF})(text).scrollTop = 0;
          const y = text.getBoundingClientRect().y;
          document.getElementById("older").click();
          return y;
        }}"""
    )
    expect(reader.locator("#messages .text")).to_have_count(150)

    assert abs(top_of(reader, "message 51") - before) <= 2


def composer_in_view(page, viewport: dict) -> None:
    assert page.evaluate("document.documentElement.scrollHeight") <= viewport["height"]
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    for control in (
        page.get_by_role("textbox", name="Message"),
        page.get_by_role("button", name="Send"),
    ):
        box = control.bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], control
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], control


@needs_chromium
@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_the_composer_stays_in_view_with_few_or_many_messages_and_an_error(
    server, person, viewport
):
    conversation = f"fit-{viewport['width']}"
    post_many(server, conversation, ["Hello", "Anyone here?", "A longer line " * 8])
    page = person(viewport=viewport)
    join(page, conversation, "thumbs")
    expect(page.locator("#messages .text")).to_have_count(3)
    composer_in_view(page, viewport)

    post_many(server, conversation, [f"more {n}" for n in range(40)])
    expect(page.locator("#messages .text")).to_have_count(43, timeout=SEEN_WITHIN_MS)
    composer_in_view(page, viewport)

    page.route("**/conversations/*?after=*", lambda route: route.abort("connectionrefused"))
    expect(page.get_by_text("Could not check for new messages")).to_be_visible(
        timeout=SEEN_WITHIN_MS
    )
    composer_in_view(page, viewport)

    # A long draft grows the box up to a limit, and the box then scrolls.
    box = page.get_by_role("textbox", name="Message")
    one_line = box.bounding_box()["height"]
    box.fill("\n".join(f"line {n}" for n in range(12)))
    box.press("End")
    grown = box.bounding_box()["height"]
    assert one_line < grown <= 8 * 16 + 2
    composer_in_view(page, viewport)


@needs_chromium
def test_a_send_that_fails_offline_is_marked_and_sent_by_itself_on_reconnect(server, person):
    page = person()
    join(page, "offline", "traveller")
    keys = []
    page.on(
        "request",
        lambda r: r.method == "POST" and keys.append(r.headers.get("idempotency-key")),
    )

    page.context.set_offline(True)
    say(page, "are you there?")
    bubble = page.locator("#messages li", has_text="are you there?")
    expect(bubble).to_contain_text("Not sent")
    # The polls that fail meanwhile are reported apart and do not hide it.
    expect(page.get_by_text("Could not check for new messages")).to_be_visible(
        timeout=SEEN_WITHIN_MS
    )
    page.wait_for_timeout(2_500)
    expect(bubble).to_contain_text("Not sent")
    assert stored(server, "offline") == []

    page.context.set_offline(False)

    expect(bubble).to_contain_text("Sent", timeout=SEEN_WITHIN_MS)
    expect(bubble).not_to_contain_text("Not sent")
    expect(page.locator("#messages .text")).to_have_text(["are you there?"])
    assert [m["message"] for m in stored(server, "offline")] == ["are you there?"]
    assert len(keys) >= 2 and len(set(keys)) == 1


@needs_chromium
def test_after_joining_the_form_folds_into_one_line_and_nothing_reads_out_the_history(
    server, person
):
    post_many(server, "folded", [f"line {n}" for n in range(1, 121)])
    page = person(viewport=PHONE)
    join(page, "folded", "ada")
    expect(page.locator("#messages .text")).to_have_count(100)

    header = page.locator("header")
    expect(header).to_contain_text("folded as ada · change")
    expect(page.get_by_label("Your name")).to_be_hidden()
    assert header.bounding_box()["height"] <= 56
    # The history that was there before the reader came is not announced:
    # no live region holds a message.
    announced = page.evaluate(
        """() => Array.from(document.querySelectorAll(
              '[aria-live]:not([aria-live="off"]), [role=log], [role=status], [role=alert]'))
            .map((region) => region.querySelectorAll(".text").length)"""
    )
    assert max(announced, default=0) == 0
    # "The start of the conversation" is said where it is true: at its top.
    page.locator("#scroller").evaluate("(scroller) => { scroller.scrollTop = 0; }")
    expect(page.locator("#messages .text")).to_have_count(120)
    start = page.get_by_text("This is the start of the conversation.")
    expect(start).to_be_visible()
    say(page, "and now a new one")
    expect(page.locator("#messages .text").last).to_have_text("and now a new one")
    expect(start).not_to_be_in_viewport()


@needs_chromium
def test_a_message_shows_at_once_as_sending_and_then_as_sent(server, person):
    page = person()
    join(page, "states", "quick")
    held = []
    page.route("**/messages/", lambda route: held.append(route))

    say(page, "on its way")

    bubble = page.locator("#messages li.mine")
    expect(bubble).to_contain_text("on its way")
    expect(bubble.locator(".state")).to_have_text("Sending…")
    expect(page.get_by_role("textbox", name="Message")).to_have_value("")
    held[0].continue_()
    expect(bubble.locator(".state")).to_have_text("Sent")
    assert [m["message"] for m in stored(server, "states")] == ["on its way"]


def pretend(page, *, hidden: bool | None = None, focused: bool | None = None) -> None:
    """Headless Chromium is always visible and focused: tell the page otherwise."""
    page.evaluate(
        """([hidden, focused]) => {
          if (hidden !== null) {
            Object.defineProperty(document, "visibilityState", {
              configurable: true, get: () => (hidden ? "hidden" : "visible")});
            Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
            document.dispatchEvent(new Event("visibilitychange"));
          }
          if (focused !== null) {
            document.hasFocus = () => focused;
            window.dispatchEvent(new Event(focused ? "focus" : "blur"));
          }
        }""",
        [hidden, focused],
    )


@needs_chromium
def test_polling_pauses_while_the_page_is_hidden_and_catches_up_when_shown(server, person):
    page = person()
    join(page, "backgrounded", "away")
    polls = []
    page.on("request", lambda r: "after=" in r.url and polls.append(r.url))

    pretend(page, hidden=True)
    expect(page.locator("#connection")).to_have_text("paused", timeout=SEEN_WITHIN_MS)
    asked_while_hidden = len(polls)
    post_many(server, "backgrounded", ["while you were away"], sender="friend")
    page.wait_for_timeout(4_500)
    assert len(polls) == asked_while_hidden
    assert shown(page) == []

    pretend(page, hidden=False)

    expect(page.locator("#messages .text")).to_have_text(["while you were away"])
    expect(page.locator("#connection")).to_have_text("polling")


@needs_chromium
def test_the_title_counts_messages_that_arrive_while_the_reader_is_away(server, person):
    page = person()
    join(page, "title-room", "reader")
    expect(page).to_have_title("title-room · Chat demo")

    pretend(page, focused=False)
    post_many(server, "title-room", ["one", "two"], sender="friend")
    expect(page).to_have_title("(2) title-room · Chat demo", timeout=SEEN_WITHIN_MS)
    # The reader's own messages are not news to them.
    say(page, "mine")
    expect(page.locator("#messages .text")).to_have_text(["one", "two", "mine"])
    expect(page).to_have_title("(2) title-room · Chat demo")

    pretend(page, focused=True)

    expect(page).to_have_title("title-room · Chat demo")


@needs_chromium
def test_a_reader_scrolled_up_is_told_of_new_messages_and_not_moved(server, person):
    post_many(server, "cue", [f"old {n}" for n in range(1, 61)])
    page = person(viewport=PHONE)
    join(page, "cue", "reader")
    expect(page.locator("#messages .text")).to_have_count(60)
    cue = page.get_by_role("button", name="New messages ↓")
    expect(cue).to_be_hidden()
    page.locator("#scroller").evaluate("(s) => { s.scrollTop = s.scrollHeight / 2; }")
    before = top_of(page, "old 30")

    post_many(server, "cue", ["fresh"], sender="friend")

    expect(cue).to_be_visible(timeout=SEEN_WITHIN_MS)
    assert top_of(page, "old 30") == before
    cue.click()
    expect(page.locator("#messages .text").last).to_be_in_viewport()
    expect(cue).to_be_hidden()


@needs_chromium
def test_older_messages_load_by_themselves_when_the_reader_scrolls_to_the_top(server, person):
    post_many(server, "upward", [f"message {n}" for n in range(1, 151)])
    page = person()
    join(page, "upward", "reader")
    expect(page.locator("#messages .text")).to_have_count(100)
    scroller = page.locator("#scroller")
    scroller.hover()

    for _ in range(40):
        page.mouse.wheel(0, -2_000)
        if len(shown(page)) == 150:
            break
        page.wait_for_timeout(50)

    expect(page.locator("#messages .text")).to_have_count(150)
    assert shown(page) == [f"message {n}" for n in range(1, 151)]
    # The button is still there for keyboards until the start is reached.
    expect(page.get_by_role("button", name="Load older messages")).to_be_hidden()
    expect(page.get_by_text("This is the start of the conversation.")).to_be_visible()


def contrast(first: str, second: str) -> float:
    """WCAG's contrast ratio of two CSS rgb() colours."""

    def luminance(colour: str) -> float:
        channels = [int(c) / 255 for c in re.findall(r"\d+", colour)[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted([luminance(first), luminance(second)], reverse=True)
    return (light + 0.05) / (dark + 0.05)


def style(locator, prop: str) -> str:
    return locator.evaluate(f"(e) => getComputedStyle(e).{prop}")


@needs_chromium
def test_a_seeded_conversation_reads_as_a_chat(server, person):
    """Runs of one sender, days apart, "You", and bubbles told apart at a glance."""
    page = person()
    join(page, "demo-support", "maria")
    expect(page.locator("#messages .text")).to_have_count(7)

    messages = page.locator("#messages li.message")
    expect(page.locator("#messages .sender:visible")).to_have_text(
        ["You", "sam (support)", "You", "sam (support)", "You"]
    )
    assert ["grouped" in (messages.nth(n).get_attribute("class") or "") for n in range(7)] == [
        False,
        False,
        True,
        False,
        True,
        False,
        False,
    ]
    mine, theirs = page.locator("li.mine").first, page.locator("li.message:not(.mine)").first
    assert contrast(style(mine, "backgroundColor"), style(theirs, "backgroundColor")) >= 3
    for bubble in (mine, theirs):
        text = bubble.locator(".text")
        assert contrast(style(text, "color"), style(bubble, "backgroundColor")) >= 4.5
    paper = style(page.locator("body"), "backgroundColor")
    for control in ("Message",):
        box = page.get_by_role("textbox", name=control)
        assert contrast(style(box, "borderTopColor"), paper) >= 3

    join_again = page.get_by_role("button", name="change")
    join_again.click()
    for control in ("Conversation", "Your name"):
        assert contrast(style(page.get_by_label(control), "borderTopColor"), paper) >= 3
    join(page, "demo-book-club", "tom")
    expect(page.locator("#messages .text")).to_have_count(6)
    days = page.locator("#messages li.day").all_text_contents()
    assert len(days) >= 3 and len(set(days)) == len(days)


@needs_chromium
def test_an_empty_conversation_says_so_until_its_first_message(server, person):
    page = person()
    join(page, "brand-new", "first")
    empty = page.get_by_text("No messages in brand-new yet. Write the first one below.")
    expect(empty).to_be_visible()

    say(page, "hello?")

    expect(empty).to_be_hidden()
    expect(page.locator("#messages .text")).to_have_text(["hello?"])


@needs_chromium
def test_the_page_asks_for_the_event_stream_from_the_newest_message_it_loaded(server, person):
    post_many(server, "resume-from", ["first", "second"])
    newest = stored(server, "resume-from")[-1]["id"]
    page = person()

    with page.expect_request("**/conversations/resume-from/events?*") as asked:
        join(page, "resume-from", "reader")

    assert asked.value.url.endswith(f"/conversations/resume-from/events?last_event_id={newest}")
    assert asked.value.headers["accept"] == "text/event-stream"


# The event stream, on the ASGI server (``make run``'s): the page is live.

# Notes in window.arrivedAt when a message with this text first shows.
WATCH_FOR = """(text) => {
  const seen = () => Array.from(document.querySelectorAll("#messages .text"))
    .some((node) => node.textContent === text);
  new MutationObserver((_, observer) => {
    if (seen()) { observer.disconnect(); window.arrivedAt = Date.now(); }
  }).observe(document.getElementById("messages"), {childList: true, subtree: true});
}"""


def no_polls(page, conversation: str) -> list[str]:
    """Refuses every poll of the conversation, so that what arrives came by its stream;
    the list of the polls tried."""
    tried = []

    def refuse(route):
        tried.append(route.request.url)
        route.abort("connectionrefused")

    page.route(f"**/conversations/{conversation}?after=*", refuse)
    return tried


@needs_chromium
def test_a_message_sent_on_one_page_reaches_the_other_over_the_stream_within_a_second(
    streaming, person
):
    ada, grace = person(on=streaming), person(on=streaming)
    join(ada, "live-room", "ada", connection="live")
    join(grace, "live-room", "grace", connection="live")
    polls = no_polls(grace, "live-room")
    grace.evaluate(WATCH_FOR, "Are you there?")

    with ada.expect_response("**/messages/") as posted:
        say(ada, "Are you there?")
    posted.value.finished()
    timing = posted.value.request.timing
    answered_at = timing["startTime"] + timing["responseEnd"]
    arrived_at = grace.wait_for_function("() => window.arrivedAt").json_value()

    assert posted.value.status == 201
    assert arrived_at - answered_at < 1_000
    assert polls == []
    expect(grace.locator("#messages .text")).to_have_text(["Are you there?"])
    expect(grace.locator("#messages .sender")).to_have_text(["ada"])
    expect(grace.locator("#connection")).to_have_text("live")


@needs_chromium
def test_the_stream_survives_a_server_restart_and_nothing_is_lost_or_shown_twice(
    site, server, person, tmp_path
):
    """A real restart: the process is stopped and started again on its port. One
    message is posted to another instance while it is down, one to it right after
    it is back, and one from the page while it is down, which goes by itself, with
    its key, when the stream reconnects."""
    restarting = RestartableServer({**site, "WEB_CONCURRENCY": "1"}, tmp_path / "web.log")
    live = restarting.start()
    try:
        post_many(live, "restart", ["before 1", "before 2"])
        page = person(on=live)
        join(page, "restart", "stayer", connection="live")
        expect(page.locator("#messages .text")).to_have_text(["before 1", "before 2"])
        keys = []
        page.on(
            "request", lambda r: r.method == "POST" and keys.append(r.headers["idempotency-key"])
        )

        restarting.stop()
        expect(page.locator("#connection")).to_have_text("reconnecting…", timeout=SEEN_WITHIN_MS)
        post_many(server, "restart", ["while it was down"])
        say(page, "mine, sent while it was down")
        mine = page.locator("#messages li.mine")
        expect(mine).to_contain_text("Not sent · Retry")
        restarting.start()
        post_many(live, "restart", ["right after"])

        expect(page.locator("#connection")).to_have_text("live", timeout=SEEN_WITHIN_MS)
        expect(mine.locator(".state")).to_have_text("Sent", timeout=SEEN_WITHIN_MS)
        expected = ["before 1", "before 2", "while it was down", "right after"]
        expect(page.locator("#messages li:not(.mine) .text")).to_have_text(expected)
        say(page, "and one more")
        expect(page.locator("#messages li.mine .state").last).to_have_text("Sent")

        stored_texts = [m["message"] for m in stored(live, "restart")]
        assert sorted(stored_texts[2:]) == sorted(
            ["while it was down", "right after", "mine, sent while it was down", "and one more"]
        )
        page.wait_for_timeout(1_000)
        shown_ids = page.locator("#messages li.message").evaluate_all(
            "(items) => items.map((item) => Number(item.dataset.id))"
        )
        assert shown_ids == [m["id"] for m in stored(live, "restart")]
        assert len(keys) >= 3 and keys[0] == keys[-2] != keys[-1]
    finally:
        restarting.stop()


NO_STREAMS = {
    "a 503": {},
    "no EventSource in the browser": {"init": "delete window.EventSource;"},
    "a stream that never opens": {},
}


@needs_chromium
@pytest.mark.parametrize("refusal", list(NO_STREAMS))
def test_where_streams_are_refused_the_page_polls_instead(streaming, person, refusal):
    conversation = f"no-streams-{len(refusal)}"
    page = person(on=streaming, **NO_STREAMS[refusal])
    asked = []
    held = []

    def refuse(route):
        asked.append(route.request.url)
        if refusal == "a 503":
            route.fulfill(
                status=503,
                headers={"Retry-After": "1", "Content-Type": "application/problem+json"},
                body=json.dumps(problem(503, "Too many open streams.")),
            )
        else:
            held.append(route)  # a proxy that buffers the stream: nothing comes

    page.route("**/events?*", refuse)
    polls = []
    page.on("response", lambda r: "after=" in r.url and r.status == 200 and polls.append(r))
    page.get_by_label("Conversation").fill(conversation)
    page.get_by_label("Your name").fill("patient")
    page.get_by_role("button", name="Join").click()
    expect(page.locator("#connection")).to_have_text("polling", timeout=SEEN_WITHIN_MS + 2_000)

    post_many(streaming, conversation, ["by polling"], sender="friend")

    expect(page.locator("#messages .text")).to_have_text(["by polling"], timeout=SEEN_WITHIN_MS)
    assert [m["message"] for r in polls for m in r.json()["messages"]] == ["by polling"]
    assert len(asked) == (0 if "EventSource" in refusal else 1)


@needs_chromium
def test_a_send_whose_answer_is_lost_while_live_is_sent_again_by_itself_with_its_key(
    streaming, person
):
    """The stream stays open, so no reconnect is coming to prompt a retry."""
    page = person(on=streaming)
    join(page, "live-flaky", "hopeful", connection="live")
    keys = []
    replays = []

    def lose_the_first_answer(route):
        keys.append(route.request.headers["idempotency-key"])
        if len(keys) == 1:
            route.fetch()
            route.abort("connectionreset")
        else:
            answer = route.fetch()
            replays.append(answer.headers.get("idempotent-replayed"))
            route.fulfill(response=answer)

    page.route("**/messages/", lose_the_first_answer)
    say(page, "did this arrive?")
    bubble = page.locator("#messages li.mine")
    expect(bubble).to_contain_text("Not sent · Retry")

    expect(bubble.locator(".state")).to_have_text("Sent", timeout=SEEN_WITHIN_MS)
    assert len(keys) == 2 and keys[0] == keys[1]
    assert replays == ["true"]
    assert [m["message"] for m in stored(streaming, "live-flaky")] == ["did this arrive?"]
    expect(page.locator("#messages .text")).to_have_text(["did this arrive?"])
    expect(page.locator("#connection")).to_have_text("live")


@needs_chromium
def test_a_send_that_fails_offline_while_live_is_marked_and_sent_on_reconnect(streaming, person):
    page = person(on=streaming)
    join(page, "live-offline", "traveller", connection="live")
    keys = []
    page.on("request", lambda r: r.method == "POST" and keys.append(r.headers["idempotency-key"]))

    page.context.set_offline(True)
    say(page, "are you there?")
    bubble = page.locator("#messages li", has_text="are you there?")
    expect(bubble).to_contain_text("Not sent · Retry")
    page.wait_for_timeout(2_500)
    expect(bubble).to_contain_text("Not sent · Retry")
    assert stored(streaming, "live-offline") == []

    page.context.set_offline(False)

    expect(bubble.locator(".state")).to_have_text("Sent", timeout=SEEN_WITHIN_MS)
    expect(page.locator("#messages .text")).to_have_text(["are you there?"])
    assert [m["message"] for m in stored(streaming, "live-offline")] == ["are you there?"]
    assert len(keys) >= 2 and len(set(keys)) == 1

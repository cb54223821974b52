"""A history page is bounded by bytes as well as by count, and a worker's memory with it.

The largest page the contract allows, 1,000 messages of 10,000 astral
characters, would be a 40 MB answer; a page stops once it passes 1 MiB (at
least one message), and its links continue from where it stopped.
"""

from __future__ import annotations

import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conversations import selectors
from conversations.services import message_create
from tests.live import fresh_database, live_server, manage, server_environment

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
# The largest message: 10,000 characters, each four bytes in UTF-8 and in JSON.
ASTRAL = "\U0001f375" * 10_000
# And the one that grows most in JSON: each control character is six bytes there.
CONTROL = "\x01" * 10_000
WORKER_BUDGET_MB = 150


def post_large(conversation_id: str, count: int, text: str = ASTRAL) -> list[int]:
    return [
        message_create(conversation_id=conversation_id, sender="s", message=text)[0].id
        for _ in range(count)
    ]


def walk(api, url: str, link: str) -> tuple[list[int], list[int]]:
    """Follow ``link`` from ``url`` to the end: the ids seen, and each answer's size in bytes."""
    seen, sizes = [], []
    while url:
        response = api.get(url)
        sizes.append(len(response.content))
        body = response.json()
        page = [m["id"] for m in body["messages"]]
        seen = seen + page if link == "next" else page + seen
        url = body[link]
    return seen, sizes


@pytest.mark.parametrize("text", [ASTRAL, CONTROL], ids=["astral", "control"])
@pytest.mark.parametrize(
    "start, link",
    [
        ("/conversations/big?after=0&limit=1000", "next"),
        ("/conversations/big?limit=1000", "previous"),
    ],
    ids=["next-from-the-first", "previous-from-the-newest"],
)
def test_following_the_links_through_large_messages_visits_each_once_in_pages_of_about_a_mib(
    api, text, start, link
):
    all_ids = post_large("big", 60, text)

    seen, sizes = walk(api, start, link)

    assert seen == all_ids
    assert len(sizes) > 1
    assert max(sizes) <= MIB + 60_100


def test_the_newest_page_of_large_messages_holds_the_newest_that_fit(api):
    all_ids = post_large("big", 40)

    body = api.get("/conversations/big?limit=1000").json()
    page = [m["id"] for m in body["messages"]]

    # 40,000-byte messages: 26 make 1,040,000 bytes, the 27th passes 1 MiB.
    assert page == all_ids[-27:]
    assert body["previous"] == f"http://testserver/conversations/big?before={page[0]}&limit=1000"
    assert body["next"] is None


def test_small_messages_still_fill_a_page_to_its_limit(api):
    all_ids = [
        message_create(conversation_id="small", sender="s", message=f"m{n}")[0].id
        for n in range(150)
    ]

    assert [m["id"] for m in api.get("/conversations/small?limit=120").json()["messages"]] == (
        all_ids[-120:]
    )


# Under gunicorn: a worker's memory with 16 of the largest reads at once.


@pytest.fixture(scope="module")
def server(tmp_path_factory, django_db_blocker):
    with (
        django_db_blocker.unblock(),
        fresh_database(tmp_path_factory.mktemp("db")) as database_url,
    ):
        env = server_environment(database_url)
        log = tmp_path_factory.mktemp("log") / "gunicorn.log"
        with live_server(env, log) as running:
            fill = textwrap.dedent(
                """
                from conversations.services import message_create
                for text in ["\\U0001f375" * 10_000, "\\x01" * 10_000]:
                    for _ in range(1000):
                        message_create(conversation_id="huge", sender="s", message=text)
                """
            )
            filled = manage(env, "shell", "-c", fill)
            assert filled.returncode == 0, filled.stderr
            running.log = log
            yield running


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise LookupError("no VmHWM")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def server_workers(port: int) -> list[int]:
    """The worker processes of the server bound to ``port``: its processes with no children."""
    bound = f"127.0.0.1:{port}"
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if bound in cmdline.read_bytes().decode(errors="replace"):
                pids.add(int(cmdline.parent.name))
        except OSError:
            continue
    parents = {parent_of(pid) for pid in pids}
    return sorted(pid for pid in pids if pid not in parents)


def test_sixteen_of_the_largest_reads_at_once_keep_each_worker_under_its_memory_budget(server):
    queries = ["limit=1000", "after=0&limit=1000", "before=1500&limit=1000", "after=900&limit=1000"]

    def read(n: int) -> tuple[int, int]:
        answer = server.request("GET", f"/conversations/huge?{queries[n % len(queries)]}")
        return answer.status, len(answer.body)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(read, range(16)))
    peaks = [peak_rss_mb(pid) for pid in server_workers(server.port)]
    print(f"worker peak RSS: {', '.join(f'{peak:.0f} MB' for peak in peaks)}")

    assert {status for status, _ in answers} == {200}
    assert max(size for _, size in answers) <= MIB + 60_100
    assert len(peaks) == 2
    assert max(peaks) < WORKER_BUDGET_MB, peaks


def test_a_page_always_holds_one_message_whatever_its_size(api, monkeypatch):
    monkeypatch.setattr(selectors, "PAGE_MAX_BYTES", 1)
    all_ids = post_large("big", 3)

    seen, sizes = walk(api, "/conversations/big?after=0", "next")
    newest = api.get("/conversations/big").json()

    assert seen == all_ids
    assert len(sizes) == 3
    assert [m["id"] for m in newest["messages"]] == all_ids[-1:]

"""Profile the hot paths in-process with pyinstrument: no network, no server.

Drives the WSGI application directly against the benchmark database that
``bench/run.py`` filled (run that first), so the profile shows where the
service's own time goes: ``python bench/profile.py post|get|not_modified|idle_poll``.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chat_bench")
os.environ.setdefault("DJANGO_SECRET_KEY", "profile-only-secret-key-0123456789abcdefghijklmnop")
os.environ.setdefault("DJANGO_HTTPS", "0")
# Every profiled request comes from one client: limits it cannot reach keep
# the rate limiter in the profile without refusing anything.
os.environ.setdefault("RATE_LIMIT_POST", "1000000000/s")
os.environ.setdefault("RATE_LIMIT_GET", "1000000000/s")

from pyinstrument import Profiler  # noqa: E402

from chatproject.wsgi import application  # noqa: E402

REQUESTS = int(os.environ.get("PROFILE_REQUESTS", "2000"))


def environ(method: str, path: str, body: bytes = b"", **headers: str) -> dict:
    path, _, query = path.partition("?")
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
    }
    env.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
    return env


def call(env: dict) -> str:
    status = []
    body = b"".join(application(env, lambda s, h, exc_info=None: status.append(s)))
    assert status[0][:3] in {"200", "201", "304"}, (status, body[:300])
    return status[0]


def main(scenario: str) -> None:
    from conversations.selectors import ConversationState

    def request(n: int) -> dict:
        conversation = f"bench-{n % 1000 + 1}"
        if scenario == "post":
            body = (
                f'{{"sender": "p", "conversation_id": "{conversation}", "message": "profile {n}"}}'
            )
            return environ("POST", "/messages/", body.encode())
        if scenario == "get":
            return environ("GET", f"/conversations/{conversation}")
        state = ConversationState.load(conversation)
        if scenario == "not_modified":
            return environ("GET", f"/conversations/{conversation}", if_none_match=state.etag)
        return environ("GET", f"/conversations/{conversation}?after={state.last_message_id}")

    prepared = [request(n) for n in range(REQUESTS)]
    for env in prepared[:50]:
        env["wsgi.input"].seek(0)
        call(env)
    profiler = Profiler(interval=0.0002)
    profiler.start()
    for env in prepared[50:]:
        call(env)
    profiler.stop()
    print(
        profiler.output_text(
            unicode=False, color=False, show_all=os.environ.get("PROFILE_ALL") == "1"
        )
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "get")

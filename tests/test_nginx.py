"""Debian's nginx with deploy/nginx.conf in front of the Procfile's web process."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from harness.processes import (
    PROJECT,
    LiveServer,
    free_port,
    live_server,
    server_environment,
)
from tests.events_client import EventStream

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (apt-get install nginx)"
)


def nginx_config(prefix: Path, listen: int, upstream: int) -> Path:
    """A main config of the test's own that includes deploy/nginx.conf with the two ports set."""
    site = (PROJECT / "deploy" / "nginx.conf").read_text()
    assert "listen 8080;" in site and "server 127.0.0.1:8000;" in site
    site = site.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};")
    (prefix / "site.conf").write_text(site)
    temp = prefix / "temp"
    temp.mkdir()
    main = prefix / "nginx.conf"
    main.write_text(
        f"""
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {prefix}/site.conf;
}}
"""
    )
    return main


@pytest.fixture(scope="module")
def proxied(tmp_path_factory, fresh_database_url):
    tmp = tmp_path_factory.mktemp("nginx")
    env = server_environment(fresh_database_url, DJANGO_TRUSTED_PROXIES="1")
    with live_server(env, tmp / "server.log") as server:
        listen = free_port()
        config = nginx_config(tmp, listen, server.port)
        check = subprocess.run([NGINX, "-t", "-c", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        nginx = subprocess.Popen(
            [NGINX, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            front = LiveServer("127.0.0.1", listen)
            deadline = time.monotonic() + 10
            while True:
                try:
                    front.request("GET", "/healthz")
                    break
                except OSError:
                    if nginx.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            yield front, tmp / "server.log"
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)


def test_the_api_answers_through_nginx_with_links_to_the_address_the_client_used(proxied):
    front, _ = proxied
    posted = front.request(
        "POST", "/messages/", {"sender": "ada", "conversation_id": "via-nginx", "message": "hi"}
    )
    second = front.request(
        "POST", "/messages/", {"sender": "ada", "conversation_id": "via-nginx", "message": "again"}
    )
    page = front.request("GET", "/conversations/via-nginx?limit=1")

    assert posted.status == 201
    assert (
        posted.headers["Location"]
        == f"http://127.0.0.1:{front.port}/messages/{posted.json()['id']}/"
    )
    assert page.status == 200
    assert page.json() == {
        "id": "via-nginx",
        "messages": [{k: second.json()[k] for k in ("id", "sender", "message", "created")}],
        "previous": f"http://127.0.0.1:{front.port}/conversations/via-nginx?before={second.json()['id']}&limit=1",
        "next": None,
    }


def test_the_service_sees_the_client_that_nginx_saw_not_the_one_it_claims(proxied):
    front, log = proxied
    front.request(
        "GET",
        "/conversations/who",
        headers={"X-Request-ID": "through-nginx", "X-Forwarded-For": "198.51.100.7"},
    )

    lines = [line for line in log.read_text().splitlines() if "through-nginx" in line]
    assert len(lines) == 1
    assert '"client":"127.0.0.1"' in lines[0]


def test_events_pass_through_nginx_one_by_one_as_they_are_stored(proxied):
    front, _ = proxied
    first = front.request(
        "POST", "/messages/", {"sender": "ada", "conversation_id": "nginx-live", "message": "0"}
    )
    stream = EventStream(front, "/conversations/nginx-live/events", {"Last-Event-ID": "0"})
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.message_ids(1) == [first.json()["id"]]
        # Each later message arrives on its own, well before nginx's read timeout
        # and the heartbeat: nothing between the service and the client holds it.
        for n in range(1, 4):
            posted = front.request(
                "POST",
                "/messages/",
                {"sender": "ada", "conversation_id": "nginx-live", "message": str(n)},
            )
            sent = time.monotonic()
            assert stream.message_ids(1) == [posted.json()["id"]]
            assert time.monotonic() - sent < 2
    finally:
        stream.close()

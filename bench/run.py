"""``make bench``: the service against the bare ceiling, on PostgreSQL, driven by wrk.

Both servers run at once under the same gunicorn settings (the service with the
Procfile's ``web`` command, the ceiling with ``gunicorn bench.ceiling:app`` and
the same config file) against one freshly filled database. Each scenario is
measured on each server in turn, ``--runs`` times, and the median run is
reported, so that both see the same machine noise. Every figure of the service
is printed as a ratio of the ceiling's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import runpy
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import product
from pathlib import Path

import psycopg

from conversations.rules import (
    EVENTS_APPLICATION_NAME,
    EVENTS_CONNECTIONS_PER_PROCESS,
    EVENTS_LISTEN_APPLICATION_NAME,
)
from harness.databases import create_database, database_on
from harness.processes import (
    PROJECT,
    free_port,
    procfile_command,
    release,
    server_environment,
    spawn,
    stop,
    wait_until_answering,
)

BENCH = PROJECT / "bench"
RESULTS = BENCH / "results"
SERVER_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DATABASE = "chat_bench"
# The servers under test run gunicorn.conf.py with two workers, as the
# benchmark specifies, and no GUNICORN_ variable of the shell (the harness
# leaves them out); connection_bound() reads the same file in this process.
os.environ["WEB_CONCURRENCY"] = "2"
for variable in [name for name in os.environ if name.startswith("GUNICORN_")]:
    del os.environ[variable]
CONVERSATIONS = 1000
MESSAGES_EACH = 50
SIZES = [10, 10_000, 1_000_000]


@dataclass
class Server:
    name: str
    command: list[str]
    port: int = 0
    process: subprocess.Popen | None = None
    # Whether it runs live delivery, whose connections carry names of their own.
    live_delivery: bool = False
    connections_peak: int = 0
    rss_mb: dict[int, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        """gunicorn's workers: the leaves of the process tree under the started command."""
        children: dict[int, list[int]] = {}
        pending = [self.process.pid]
        while pending:
            pid = pending.pop()
            out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
            children[pid] = [int(child) for child in out.stdout.split()]
            pending += children[pid]
        return sorted(pid for pid, below in children.items() if not below)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("installing wrk from Debian's packages")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or sys.exit("wrk could not be installed")


def database_url() -> str:
    return database_on(SERVER_URL, DATABASE)


def environment(port: int) -> dict[str, str]:
    return server_environment(
        # Named, so that the connection sampler counts this server's connections alone.
        f"{database_url()}?application_name=service",
        # The load comes from one address; limits that it can never reach keep
        # the rate limiter's cost in what is measured without refusing anything.
        RATE_LIMIT_POST="1000000000/s",
        RATE_LIMIT_GET="1000000000/s",
        PORT=str(port),
        PYTHONPATH=str(PROJECT),
    )


FILL = f"""
INSERT INTO conversations_conversation (id, message_count)
    SELECT 'bench-' || c, 0 FROM generate_series(1, {CONVERSATIONS}) c;
INSERT INTO conversations_message (conversation_id, sender, message, created)
    SELECT 'bench-' || c, 'user' || (m % 7),
           'Prefilled message ' || m || ' of a benchmark conversation, about as long as a chat line.',
           date_trunc('milliseconds', now() - interval '1 day' + (m * {CONVERSATIONS} + c) * interval '1 ms')
    FROM generate_series(1, {MESSAGES_EACH}) m, generate_series(1, {CONVERSATIONS}) c
    ORDER BY m, c;
"""

FILL_SIZE = """
INSERT INTO conversations_conversation (id, message_count) VALUES ('size-{n}', 0);
INSERT INTO conversations_message (conversation_id, sender, message, created)
    SELECT 'size-{n}', 'user' || (m % 7),
           'Prefilled message ' || m || ' of a long benchmark conversation.',
           date_trunc('milliseconds', now() - interval '2 days' + m * interval '1 ms')
    FROM generate_series(1, {n}) m;
"""

COUNTERS = """
UPDATE conversations_conversation c
SET message_count = s.n, first_message_id = s.lo, last_message_id = s.hi,
    first_message_at = s.first_at, last_message_at = s.last_at
FROM (SELECT conversation_id, count(*) n, min(id) lo, max(id) hi,
             min(created) first_at, max(created) last_at
      FROM conversations_message GROUP BY conversation_id) s
WHERE c.id = s.conversation_id;
"""


def fill() -> None:
    started = time.monotonic()
    with psycopg.connect(database_url(), autocommit=True) as conn:
        conn.execute(FILL)
        for n in SIZES:
            conn.execute(FILL_SIZE.format(n=n))
        conn.execute(COUNTERS)
        conn.execute("VACUUM ANALYZE")
        # Write the fill's pages out now, not in a checkpoint during the first runs.
        conn.execute("CHECKPOINT")
        total = conn.execute("SELECT count(*) FROM conversations_message").fetchone()[0]
    log(f"filled {total:,} messages in {time.monotonic() - started:.0f} s")


def prepare_database() -> None:
    """A fresh database, migrated by the Procfile's release command, then filled."""
    create_database(SERVER_URL, DATABASE, replace=True)
    try:
        release(environment(0))
    except RuntimeError as error:
        sys.exit(str(error))
    fill()


def start(server: Server) -> None:
    server.port = free_port()
    log = RESULTS / f"{server.name}.log"
    log.unlink(missing_ok=True)
    # Loopback only: gunicorn.conf.py binds every interface, as a deploy wants.
    command = [*server.command, "--bind", f"127.0.0.1:{server.port}"]
    # stdout is the request log, a line per answer: kept off the disk while measuring.
    server.process = spawn(command, environment(server.port), log, discard_stdout=True)
    wait_until_answering(server.port, server.process, log)


def record_memory(server: Server) -> None:
    for pid in server.worker_pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        server.rss_mb[pid] = int(fields["VmHWM"].split()[0]) / 1024


def connection_bound(server: Server) -> int:
    """Workers × threads, as gunicorn.conf.py sets them for the benchmark's environment,
    and each worker's live delivery connections where the server runs it."""
    config = runpy.run_path(str(PROJECT / "gunicorn.conf.py"))
    per_worker = config.get("threads", 1)
    if server.live_delivery:
        per_worker += EVENTS_CONNECTIONS_PER_PROCESS
    return config["workers"] * per_worker


class ConnectionSampler(threading.Thread):
    """Samples PostgreSQL's connections to the bench database, per server (application_name)."""

    def __init__(self, servers: list[Server]) -> None:
        super().__init__(daemon=True)
        self.servers = servers
        self.running = True

    def run(self) -> None:
        with psycopg.connect(SERVER_URL, autocommit=True) as conn:
            while self.running:
                counts = dict(
                    conn.execute(
                        "SELECT application_name, count(*) FROM pg_stat_activity "
                        "WHERE datname = %s GROUP BY 1",
                        [DATABASE],
                    ).fetchall()
                )
                for server in self.servers:
                    now = counts.get(server.name, 0)
                    if server.live_delivery:
                        now += counts.get(EVENTS_APPLICATION_NAME, 0)
                        now += counts.get(EVENTS_LISTEN_APPLICATION_NAME, 0)
                    server.connections_peak = max(server.connections_peak, now)
                time.sleep(0.2)


def lua_list(values: list[str]) -> str:
    return "{" + ", ".join(json.dumps(v) for v in values) + "}"


def get_scenario(paths: list[str], etags: list[str] | None = None) -> str:
    tags = lua_list(etags) if etags else "nil"
    return f"""
local paths = {lua_list(paths)}
local etags = {tags}
function request()
  local i = math.random(#paths)
  local headers = {{}}
  if etags then headers["If-None-Match"] = etags[i] end
  return wrk.format("GET", paths[i], headers)
end
"""


POST_SCENARIO = f"""
function request()
  sent = sent + 1
  local body = string.format(
    '{{"sender": "wrk%d", "conversation_id": "bench-%d", "message": "Benchmark message %d from thread %d"}}',
    thread_number, math.random({CONVERSATIONS}), sent, thread_number)
  return wrk.format("POST", "/messages/", {{["Content-Type"] = "application/json"}}, body)
end
"""


def conversation_states() -> dict[str, tuple[int, int]]:
    with psycopg.connect(database_url()) as conn:
        rows = conn.execute(
            "SELECT id, message_count, last_message_id FROM conversations_conversation "
            "WHERE id LIKE 'bench-%%'"
        ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def scenario_script(name: str) -> str:
    if name == "post":
        return POST_SCENARIO
    if name == "get":
        return get_scenario([f"/conversations/bench-{c}" for c in range(1, CONVERSATIONS + 1)])
    states = conversation_states()
    ids = sorted(states)
    if name == "not_modified":
        etags = [f'"m{states[c][0]}.{states[c][1]}"' for c in ids]
        return get_scenario([f"/conversations/{c}" for c in ids], etags)
    if name == "idle_poll":
        return get_scenario([f"/conversations/{c}?after={states[c][1]}" for c in ids])
    if name.startswith("size-"):
        return get_scenario([f"/conversations/{name}"])
    raise LookupError(name)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU time of each process so far."""
    times = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return times


def server_processes(server: Server) -> list[int]:
    """The server's gunicorn processes and its PostgreSQL backends."""
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        backends = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            [DATABASE, server.name],
        ).fetchall()
    return [server.process.pid, *server.worker_pids(), *(pid for (pid,) in backends)]


def run_wrk(wrk: str, server: Server, script: str, seconds: int, connections: int) -> dict:
    template = (BENCH / "wrk.lua.template").read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(template.replace("-- SCENARIO --", script))
    threads = min(2, connections)
    cpu_before = cpu_seconds(server_processes(server))
    out = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            # An answer slower than this counts as a socket error (wrk's default is 2 s).
            "--timeout",
            "10s",
            "--latency",
            "-s",
            lua.name,
            server.url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    cpu_after = cpu_seconds(server_processes(server))
    os.unlink(lua.name)
    line = next((line for line in out.stdout.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out.stdout}\n{out.stderr}")
    result = json.loads(line.removeprefix("RESULT "))
    statuses: dict[int, int] = {}
    for status, count in result["statuses"]:
        statuses[status] = statuses.get(status, 0) + count
    result["statuses"] = statuses
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    # CPU the server and its PostgreSQL backends spent per answer: unlike
    # req/s, it hardly moves when other work shares the machine.
    spent = sum(cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after)
    result["cpu_us"] = spent / max(result["requests"], 1) * 1e6
    return result


SCENARIOS = {
    "post": ("POST /messages/", {201}),
    "get": ("GET default page (50+ messages)", {200}),
    "not_modified": ("GET with matching If-None-Match (304)", {304}),
    "idle_poll": ("GET ?after=<newest id> (idle poll)", {200}),
}


def measure(args, wrk: str, servers: list[Server]) -> dict:
    """Every scenario on every server, ``args.runs`` times.

    The sizes are one group whose runs take turns (10, 10,000, 1,000,000,
    then again), so that the cost-growth ratio compares runs made minutes
    apart at most, not a quiet spell with a busy one. The servers take turns
    going first, so that neither always meets what the other left behind.
    """
    results: dict = {}
    groups = [[(name, args.connections)] for name in SCENARIOS]
    groups.append([(f"size-{n}", 1) for n in SIZES])
    if args.only:
        wanted = args.only.split(",")
        groups = [[step for step in group if step[0] in wanted] for group in groups]
    seconds = args.duration
    for group in filter(None, groups):
        for run in range(args.runs):
            order = servers if run % 2 == 0 else servers[::-1]
            for (name, connections), server in product(group, order):
                script = scenario_script(name)
                run_wrk(wrk, server, script, args.warmup, connections)
                result = run_wrk(wrk, server, script, seconds, connections)
                results.setdefault(name, {}).setdefault(server.name, []).append(result)
                log(
                    f"{name:13} run {run + 1} {server.name:8} {result['rps']:8.0f} req/s  "
                    f"p50 {result['p50_us'] / 1000:6.2f} ms  p99 {result['p99_us'] / 1000:6.2f} ms  "
                    f"cpu {result['cpu_us']:5.0f} us/req  "
                    f"statuses {result['statuses']}  socket errors {result['socket_errors']}"
                )
    return results


def median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def unexpected_answers(name: str, runs: list[dict]) -> int:
    """Answers of another status than the scenario's, plus socket errors and timeouts."""
    expected = SCENARIOS.get(name, ("", {200}))[1]
    wrong = sum(
        count for run in runs for status, count in run["statuses"].items() if status not in expected
    )
    return wrong + sum(run["socket_errors"] for run in runs)


def report(args, results: dict, servers: list[Server]) -> str:
    service, ceiling = servers
    lines = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"PostgreSQL on 127.0.0.1): gunicorn `WEB_CONCURRENCY=2` with gunicorn.conf.py, "
        f"wrk {args.connections} connections, {args.duration} s per run after {args.warmup} s "
        f"warm-up, median of {args.runs} runs.",
        "",
        "| scenario | service req/s | ceiling req/s | ratio | service p50 / p99 ms | ceiling p50 / p99 ms "
        "| CPU µs per answer, service / ceiling (ratio) | unexpected answers |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, (title, _) in SCENARIOS.items():
        ours, bare = median_run(results[name]["service"]), median_run(results[name]["ceiling"])
        bad = unexpected_answers(name, results[name]["service"] + results[name]["ceiling"])
        lines.append(
            f"| {title} | {ours['rps']:,.0f} | {bare['rps']:,.0f} | **{ours['rps'] / bare['rps']:.2f}×** | "
            f"{ours['p50_us'] / 1000:.2f} / {ours['p99_us'] / 1000:.2f} | "
            f"{bare['p50_us'] / 1000:.2f} / {bare['p99_us'] / 1000:.2f} | "
            f"{ours['cpu_us']:,.0f} / {bare['cpu_us']:,.0f} ({bare['cpu_us'] / ours['cpu_us']:.2f}×) "
            f"| {bad} |"
        )
    lines += [
        "",
        "| default page, one connection | service p50 / p99 ms | ceiling p50 / p99 ms | unexpected answers |",
        "| --- | ---: | ---: | ---: |",
    ]
    base = None
    for n in SIZES:
        name = f"size-{n}"
        ours, bare = median_run(results[name]["service"]), median_run(results[name]["ceiling"])
        base = base or ours["p50_us"]
        bad = unexpected_answers(name, results[name]["service"] + results[name]["ceiling"])
        lines.append(
            f"| {n:,} messages | {ours['p50_us'] / 1000:.2f} / {ours['p99_us'] / 1000:.2f} "
            f"({ours['p50_us'] / base:.2f}× the 10-message p50) | "
            f"{bare['p50_us'] / 1000:.2f} / {bare['p99_us'] / 1000:.2f} | {bad} |"
        )
    lines += [
        "",
        "| server | worker peak RSS (MB) | PostgreSQL connections, peak (bound) |",
        "| --- | --- | --- |",
    ]
    for server in servers:
        rss = ", ".join(f"{mb:.0f}" for mb in server.rss_mb.values())
        bound = connection_bound(server)
        lines.append(f"| {server.name} | {rss} | {server.connections_peak} ({bound}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario; the median is kept")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--skip-fill", action="store_true", help="reuse the filled database")
    parser.add_argument("--only", help="measure only these scenarios (comma list), to try a change")
    args = parser.parse_args()

    RESULTS.mkdir(exist_ok=True)
    wrk = ensure_wrk()
    if not args.skip_fill:
        prepare_database()
    servers = [
        Server("service", procfile_command("web"), live_delivery=True),
        # The ceiling is a bare WSGI application: gthread serves it, with the same threads.
        Server(
            "ceiling",
            [
                "gunicorn",
                "bench.ceiling:app",
                "--config",
                "gunicorn.conf.py",
                "--worker-class",
                "gthread",
            ],
        ),
    ]
    sampler = ConnectionSampler(servers)
    try:
        for server in servers:
            start(server)
        sampler.start()
        results = measure(args, wrk, servers)
        for server in servers:
            record_memory(server)
    finally:
        sampler.running = False
        for server in servers:
            stop(server.process)
    if args.only:
        for name, runs in results.items():
            ours, bare = median_run(runs["service"]), median_run(runs["ceiling"])
            print(
                f"{name}: {ours['rps']:.0f} / {bare['rps']:.0f} = {ours['rps'] / bare['rps']:.2f}x"
                f"   cpu/req {ours['cpu_us']:.0f} / {bare['cpu_us']:.0f} us"
                f" = {bare['cpu_us'] / ours['cpu_us']:.2f}x"
            )
        return
    table = report(args, results, servers)
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    (RESULTS / f"bench-{stamp}.json").write_text(json.dumps(results, indent=1))
    (RESULTS / f"bench-{stamp}.md").write_text(table + "\n")
    print()
    print(table)


if __name__ == "__main__":
    main()

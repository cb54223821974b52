"""``make soak``: mixed traffic against gunicorn on PostgreSQL, watching errors, connections and memory.

64 connections for 60 s (by default) of 80% ``POST /messages/`` and 20%
``GET /conversations/<id>`` over the benchmark's 1,000 conversations, against
the Procfile's web process on the database ``bench/run.py`` fills (filled here
if it does not exist yet). It prints the answers by status, the PostgreSQL
connections at their peak against the configured bound, and each worker's
resident memory at the start and the end, and exits non-zero on any answer
that is not a 2xx or on connections over the bound.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg

from bench import run as bench
from harness.processes import procfile_command, stop

MIXED = f"""
function request()
  sent = sent + 1
  local conversation = math.random({bench.CONVERSATIONS})
  if math.random(100) <= 80 then
    local body = string.format(
      '{{"sender": "soak%d", "conversation_id": "bench-%d", "message": "Soak message %d from thread %d"}}',
      thread_number, conversation, sent, thread_number)
    return wrk.format("POST", "/messages/", {{["Content-Type"] = "application/json"}}, body)
  end
  return wrk.format("GET", "/conversations/bench-" .. conversation)
end
"""


def worker_rss_mb(server: bench.Server) -> dict[int, float]:
    sizes = {}
    for pid in server.worker_pids():
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        sizes[pid] = int(fields["VmRSS"].split()[0]) / 1024
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()

    bench.RESULTS.mkdir(exist_ok=True)
    wrk = bench.ensure_wrk()
    with psycopg.connect(bench.SERVER_URL, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [bench.DATABASE]
        ).fetchone()
    if not exists:
        bench.prepare_database()
    server = bench.Server("service", procfile_command("web"), live_delivery=True)
    sampler = bench.ConnectionSampler([server])
    try:
        bench.start(server)
        sampler.start()
        bench.run_wrk(wrk, server, MIXED, 3, args.connections)
        time.sleep(1)
        before = worker_rss_mb(server)
        result = bench.run_wrk(wrk, server, MIXED, args.duration, args.connections)
        after = worker_rss_mb(server)
    finally:
        sampler.running = False
        stop(server.process)

    bound = bench.connection_bound(server)
    bad = sum(n for status, n in result["statuses"].items() if not 200 <= status < 300)
    bad += result["socket_errors"]
    print(
        f"\nSoak: {args.connections} connections, {args.duration} s, 80% POST / 20% GET, "
        f"gunicorn WEB_CONCURRENCY=2 with gunicorn.conf.py on PostgreSQL\n"
    )
    print("| requests | req/s | p50 / p99 ms | answers by status | non-2xx or socket errors |")
    print("| ---: | ---: | ---: | --- | ---: |")
    statuses = ", ".join(f"{s}: {n:,}" for s, n in sorted(result["statuses"].items()))
    print(
        f"| {result['requests']:,} | {result['rps']:,.0f} | {result['p50_us'] / 1000:.1f} / "
        f"{result['p99_us'] / 1000:.1f} | {statuses} | {bad} |"
    )
    print("\n| PostgreSQL connections, peak | bound (workers × (threads + live delivery's)) |")
    print("| ---: | ---: |")
    print(f"| {server.connections_peak} | {bound} |")
    print("\n| worker | RSS at start (MB) | RSS at end (MB) |")
    print("| --- | ---: | ---: |")
    for pid in sorted(before):
        print(f"| {pid} | {before[pid]:.1f} | {after.get(pid, float('nan')):.1f} |")
    if bad or server.connections_peak > bound:
        sys.exit("soak failed: answers that are not 2xx, or connections over the bound")


if __name__ == "__main__":
    main()

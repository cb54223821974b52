"""Faults under load lose nothing: the crash test's quick run, on a PostgreSQL of its own.

The run starts its own PostgreSQL and gunicorn and never touches the suite's
database, so it is the same test whichever database the suite runs on.
"""

import re
import subprocess
import sys

import pytest

from harness.databases import postgres_unavailable
from harness.processes import PROJECT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        postgres_unavailable() is not None, reason=f"crash test: {postgres_unavailable()}"
    ),
]

SEED = 3
MUST_BE_ZERO = (
    "lost",
    "duplicated",
    "unexpected",
    "order violations",
    "wrong ids",
    "paging anomalies",
    "counter mismatches",
    "unfinished",
)


def test_killed_workers_restarted_servers_and_a_crashed_database_lose_and_double_nothing():
    run = subprocess.run(
        [sys.executable, "-m", "bench.crash", "--quick", "--seed", str(SEED)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    results = {
        name: int(count)
        for name, count in re.findall(r"^  ([a-z][a-z ]*[a-z]) +(\d+)$", run.stdout, re.MULTILINE)
    }

    assert run.returncode == 0, run.stdout + run.stderr
    assert "faults: 3 (kill-worker 1, restart-gunicorn 1, crash-postgres 1)" in run.stdout
    assert results["acknowledged"] > 0
    assert results["stored"] == results["acknowledged"]
    assert {name: results[name] for name in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0)
    assert re.search(r"^500( +0){5}$", run.stdout, re.MULTILINE), "a 500 was answered"
    assert run.stdout.rstrip().endswith("violations: 0\nRESULT: OK")

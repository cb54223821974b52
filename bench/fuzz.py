"""``make fuzz``: schemathesis against the live service, on the database ``DATABASE_URL`` names.

It starts the Procfile's web process (gunicorn) on a fresh, empty database of
the kind ``DATABASE_URL`` selects (SQLite when unset; on PostgreSQL a new
database on that server, dropped at the end), loads the schema the service
serves at ``/api/schema/`` and runs ``st run`` against it: every check, NUL
bytes allowed in generated strings, the examples, coverage, fuzzing and
stateful phases, a fixed seed. It prints schemathesis's report, then the
server's answers by status (from its request log), and exits with
schemathesis's status, so any failure (a 5xx, an answer the schema does not
describe) fails the run; so does a traceback in the server's log.

``--quick`` is the small budget ``make test`` runs (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from harness.databases import fresh_database
from harness.processes import PROJECT, live_server, server_environment

CONFIG = PROJECT / "bench" / "schemathesis.toml"
SEED = 7
LONG_EXAMPLES = 400
QUICK_EXAMPLES = 12


def schemathesis_command(base_url: str, *, seed: int, max_examples: int) -> list[str]:
    return [
        str(Path(sys.executable).parent / "st"),
        "--config-file",
        str(CONFIG),
        "run",
        f"{base_url}/api/schema/?format=json",
        "--url",
        base_url,
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--generation-allow-x00",
        "true",
        "--seed",
        str(seed),
        "--max-examples",
        str(max_examples),
        # One worker: with a seed, the run is the same every time.
        "--workers",
        "1",
        # No example database: each run draws from its seed alone, not from earlier runs.
        "--generation-database",
        "none",
        "--no-color",
    ]


def answers_by_status(log: str) -> Counter:
    """The status of every request in the server's log (one JSON line each)."""
    statuses: Counter = Counter()
    # Not splitlines(): a logged path or query may hold U+2028, U+0085 and the like.
    for line in log.split("\n"):
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "chatproject.requests":
                statuses[entry["status"]] += 1
    return statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--max-examples", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="the small budget of make test")
    # Anything else goes to `st run` as it is (e.g. --continue-on-failure).
    args, st_options = parser.parse_known_args()
    max_examples = args.max_examples or (QUICK_EXAMPLES if args.quick else LONG_EXAMPLES)

    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp, fresh_database(Path(tmp)) as url:
        env = server_environment(url, RATE_LIMIT_POST="off", RATE_LIMIT_GET="off")
        log = Path(tmp) / "gunicorn.log"
        kind = url.partition(":")[0]
        with live_server(env, log) as server:
            base_url = f"http://{server.host}:{server.port}"
            command = schemathesis_command(base_url, seed=args.seed, max_examples=max_examples)
            command += st_options
            print(f"== schemathesis on {kind}: {' '.join(command)}", flush=True)
            # PYTHONPATH: the config's hooks module is bench.fuzz_hooks.
            st_env = {**os.environ, "PYTHONPATH": str(PROJECT)}
            run = subprocess.run(command, cwd=tmp, env=st_env, timeout=3600)
        output = log.read_text(encoding="utf-8")
        statuses = answers_by_status(output)
        print(
            f"== the server's answers by status: {sum(statuses.values())} in all, "
            + ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
        )
        if "Traceback" in output:
            print(f"== the server logged a traceback:\n{output}")
            return run.returncode or 1
        return run.returncode


if __name__ == "__main__":
    sys.exit(main())

"""Bad input finds nothing: schemathesis's short run against the live service.

``python -m bench.fuzz`` starts the Procfile's gunicorn on a fresh database of the
suite's kind and runs ``st run`` with every check, NUL bytes allowed, the
examples, coverage, fuzzing and stateful phases and a fixed seed; ``--quick``
keeps the budget small. ``make fuzz`` is the long run.
"""

import re
import subprocess
import sys

import pytest
from django.db import connection

from harness.processes import PROJECT

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_server_error_and_no_answer_the_schema_does_not_describe():
    run = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--quick"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = run.stdout + run.stderr
    kind = "postgres" if connection.vendor == "postgresql" else "sqlite"
    command = re.search(rf"^== schemathesis on {kind}: (.*)$", run.stdout, re.MULTILINE)
    cases = re.search(r"^  (\d+) generated, (\d+) passed$", run.stdout, re.MULTILINE)
    answers = re.search(r"^== the server's answers by status: (.*)$", run.stdout, re.MULTILINE)

    assert run.returncode == 0, report
    assert command, report
    for option in ["--checks all", "--generation-allow-x00 true", "--seed 7"]:
        assert option in command[1]
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"]:
        assert f"✅ {phase}\n" in run.stdout, phase
    assert cases and int(cases[1]) == int(cases[2]) >= 100, report
    assert "No issues found" in run.stdout
    assert answers and " 201 " in answers[1], report
    assert not re.search(r" 5\d\d ", answers[1]), answers[1]

"""schemathesis hooks: the two request rules OpenAPI 3.0 has no words for.

Each is in the README and in the schema's descriptions, and both are a 400:

- ``GET /conversations/<id>``: ``before`` and ``after`` together. OpenAPI
  declares each query parameter on its own; it cannot say "not both".
- ``POST /messages/``: ``conversation_id`` and its misspelling
  ``converstaion_id`` both sent, with different values. JSON Schema (draft 4,
  OpenAPI 3.0's) cannot compare two properties' values.

schemathesis's ``positive_data_acceptance`` check (ST202) insists that a
request the schema allows is accepted, so it fails on these. This hook drops
exactly those failures: an ST202 whose request breaks one of the rules and
whose 400 names that rule and nothing else. Any other rejection of valid data
still fails the run, and every check stays on. The rules themselves are
tested in tests/test_conversation_history.py and tests/test_validation.py.

A failure filter rather than a case filter, because the stateful phase writes
values from earlier answers into a request after any case filter has run.

bench/schemathesis.toml loads this module (``hooks``).
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis

NOT_BOTH = ["Use before or after, not both."]
DIFFERENT_IDS = ["Differs from conversation_id; send only conversation_id."]


def rule_only_the_schema_cannot_state(case: Any) -> dict[str, list[str]] | None:
    """The `errors` of the 400 the request gets for breaking such a rule; None if it does not."""
    query = case.query or {}
    if "before" in query and "after" in query:
        return {"before": NOT_BOTH, "after": NOT_BOTH}
    body = case.body
    if isinstance(body, dict) and "conversation_id" in body and "converstaion_id" in body:
        # The serializer compares the ids as text: 12 and "12" are the same id.
        if str(body["conversation_id"]) != str(body["converstaion_id"]):
            return {"converstaion_id": DIFFERENT_IDS}
    return None


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    if failure.code != "ST202" or response.status_code != 400:
        return True
    expected = rule_only_the_schema_cannot_state(case)
    if expected is None:
        return True
    try:
        errors = json.loads(response.content).get("errors")
    except ValueError:
        return True
    return errors != expected

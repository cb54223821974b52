"""schemathesis hooks: the two request rules OpenAPI 3.0 has no words for.

Each is in the README and in the schema's descriptions, and both are a 400:

- ``GET /conversations/<id>``: ``before`` and ``after`` together. OpenAPI
  declares each query parameter on its own; it cannot say "not both".
- ``POST /messages/``: ``conversation_id`` and its misspelling
  ``converstaion_id`` both sent, with different values. JSON Schema (draft 4,
  OpenAPI 3.0's) cannot compare two properties' values.

schemathesis's ``positive_data_acceptance`` check insists that a request the
schema allows is accepted, so its *positive* cases must not break these rules:
this hook drops the few that do, and nothing else. Negative cases are left
alone (the server must, and does, reject them), and every check stays on. The
rules themselves are tested in tests/test_conversation_history.py and
tests/test_validation.py.

bench/fuzz.py loads this module through ``SCHEMATHESIS_HOOKS``.
"""

from __future__ import annotations

from typing import Any

import schemathesis


def breaks_a_rule_the_schema_cannot_state(case: Any) -> bool:
    query = case.query or {}
    if "before" in query and "after" in query:
        return True
    body = case.body
    if isinstance(body, dict) and "conversation_id" in body and "converstaion_id" in body:
        # The serializer compares the ids as text: 12 and "12" are the same id.
        return str(body["conversation_id"]) != str(body["converstaion_id"])
    return False


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    meta = case.meta
    if meta is None or meta.generation.mode.is_negative:
        return True
    return not breaks_a_rule_the_schema_cannot_state(case)

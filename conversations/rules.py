"""The contract's limits, patterns and wordings, each written once.

The input checks (``inputs.py``), the database's constraints (``models.py``),
the OpenAPI description (``schema.py``), the demo page's form, the ceiling in
``bench/`` and the tests all read them from here. Plain Python with no
imports from Django, so that the ceiling (a bare WSGI app) can read it too.
"""

from __future__ import annotations

import re

CONVERSATION_ID_MAX_LENGTH = 100
SENDER_MAX_LENGTH = 150
MESSAGE_MAX_LENGTH = 10_000
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# Message ids are 64-bit: a larger paging bound reads as the largest id.
MAX_MESSAGE_ID = 2**63 - 1
PAGE_LIMIT_DEFAULT = 100
PAGE_LIMIT_MAX = 1000
# A page also stops once its messages pass this many bytes as JSON (at least
# one message): the largest page the limits allow, 1,000 messages of 10,000
# four-byte characters, would be a 40 MB answer held in a worker's memory.
PAGE_MAX_BYTES = 1024 * 1024
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"

# Live delivery's own PostgreSQL connections in each server process, whatever
# the number of streams (conversations/hub.py): one LISTEN connection, direct
# to the primary, and a pool for the catch-up queries. Each carries one of
# these application names, so that the benchmarks count them for the service.
EVENTS_POOL_MAX_CONNECTIONS = 2
EVENTS_CONNECTIONS_PER_PROCESS = 1 + EVENTS_POOL_MAX_CONNECTIONS
EVENTS_APPLICATION_NAME = "chat live events"
EVENTS_LISTEN_APPLICATION_NAME = f"{EVENTS_APPLICATION_NAME} LISTEN"

# Unreserved URL characters plus ":@+", so an id is its own URL path segment;
# and not "." or ".." alone, which a URL reads as a step along the path.
CONVERSATION_ID_CHARACTERS = r"A-Za-z0-9._~:@+\-"
CONVERSATION_ID_DOT_SEGMENTS = frozenset({".", ".."})
CONVERSATION_ID_RE = re.compile(f"[{CONVERSATION_ID_CHARACTERS}]+")
# The same rule as one pattern that every JSON Schema dialect reads alike: the
# lookahead says what a character class cannot. A "-" last in a class is itself.
_ID_CLASS = CONVERSATION_ID_CHARACTERS.replace("\\", "")
CONVERSATION_ID_PATTERN = rf"^(?!\.{{1,2}}$)[{_ID_CLASS}]{{1,{CONVERSATION_ID_MAX_LENGTH}}}$"
_ID_CHARACTERS_SHOWN = "A-Z a-z 0-9 . _ ~ : @ + -"
# The demo page's form says this; the schema says it in Markdown.
CONVERSATION_ID_HINT = f"1 to {CONVERSATION_ID_MAX_LENGTH} of the characters {_ID_CHARACTERS_SHOWN}"
CONVERSATION_ID_DESCRIPTION = (
    f"1 to {CONVERSATION_ID_MAX_LENGTH} of the characters `{_ID_CHARACTERS_SHOWN}`, "
    "and not `.` or `..` alone."
)

IDEMPOTENCY_KEY_RE = re.compile(rf"[\x20-\x7e]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}")
IDEMPOTENCY_KEY_PATTERN = rf"^[\x20-\x7E]{{1,{IDEMPOTENCY_KEY_MAX_LENGTH}}}$"

# What str.strip() and str.isspace() take for whitespace, which is what a
# sender is trimmed of and a message may not be made of alone, spelled out so
# that every regex dialect (ECMA 262, Python, Rust) reads the same set: `\s`
# differs between them.
WHITESPACE = r"\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SPACE = f"[{WHITESPACE}]"
_SOLID = f"[^\\x00{WHITESPACE}]"
# A sender: 1 to 150 characters once surrounding whitespace is trimmed, no NUL.
SENDER_PATTERN = rf"^{_SPACE}*{_SOLID}(?:[^\x00]{{0,{SENDER_MAX_LENGTH - 2}}}{_SOLID})?{_SPACE}*$"
# A message: not whitespace only, no NUL (its length is maxLength's job).
MESSAGE_PATTERN = rf"^{_SPACE}*{_SOLID}[^\x00]*$"
SURROGATE_RE = re.compile("[\ud800-\udfff]")
# orjson reads integers up to 64 bits; a larger one is a float, and a 400.
JSON_INTEGER_MIN = -(2**63)
JSON_INTEGER_MAX = 2**64 - 1

# Wordings. Where DRF has one for the same fault, it is DRF's (tests/test_rules.py
# holds them together), so that a message's errors read as every other field's.
REQUIRED = "This field is required."
NULL = "This field may not be null."
BLANK = "This field may not be blank."
NOT_A_STRING = "Not a valid string."
TOO_LONG = "Ensure this field has no more than {max_length} characters."
NUL_CHARACTER = "Null characters are not allowed."
SURROGATE_CHARACTER = "Surrogate characters are not allowed: U+{code_point:X}."
NOT_AN_INTEGER = "A valid integer is required."
AT_MOST = "Ensure this value is less than or equal to {max_value}."
AT_LEAST = "Ensure this value is greater than or equal to {min_value}."
NOT_STRING_OR_INTEGER = "Must be a string or an integer."
CONVERSATION_ID_RULE = f"Use {CONVERSATION_ID_HINT} (and not '.' or '..' alone)."
ALIAS_DIFFERS = "Differs from conversation_id; send only conversation_id."
IDEMPOTENCY_KEY_RULE = f"Use 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters."
IDEMPOTENCY_KEY_REUSED = (
    "This Idempotency-Key already stored a different message in this conversation; "
    "a retry must repeat the same sender and message, a new message needs a new key."
)
BEFORE_OR_AFTER = "Use before or after, not both."

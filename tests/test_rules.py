"""The contract's rules (conversations.rules) agree with what else states them."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.core.validators import ProhibitNullCharactersValidator
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from conversations import rules


@pytest.mark.parametrize(
    ("ours", "drfs"),
    [
        (rules.REQUIRED, serializers.Field.default_error_messages["required"]),
        (rules.NULL, serializers.Field.default_error_messages["null"]),
        (rules.BLANK, serializers.CharField.default_error_messages["blank"]),
        (rules.NOT_A_STRING, serializers.CharField.default_error_messages["invalid"]),
        (rules.TOO_LONG, serializers.CharField.default_error_messages["max_length"]),
        (rules.NUL_CHARACTER, ProhibitNullCharactersValidator.message),
        (rules.SURROGATE_CHARACTER, ProhibitSurrogateCharactersValidator.message),
        (rules.NOT_AN_INTEGER, serializers.IntegerField.default_error_messages["invalid"]),
        (rules.AT_MOST, serializers.IntegerField.default_error_messages["max_value"]),
        (rules.AT_LEAST, serializers.IntegerField.default_error_messages["min_value"]),
    ],
    ids=lambda value: str(value)[:24],
)
def test_the_errors_a_serializer_would_raise_are_worded_as_drf_words_them(ours, drfs):
    assert ours == str(drfs)


def test_the_conversation_id_regex_and_its_published_pattern_are_one_rule():
    published = rules.CONVERSATION_ID_PATTERN

    assert published == r"^(?!\.{1,2}$)[A-Za-z0-9._~:@+-]{1,100}$"
    assert rules.CONVERSATION_ID_RE.pattern == r"[A-Za-z0-9._~:@+\-]+"


def test_the_rules_module_imports_no_django_so_the_bare_ceiling_can_read_it():
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, conversations.rules; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'django', 'rest_framework'}))",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )

    assert loaded.stdout == "[]\n"

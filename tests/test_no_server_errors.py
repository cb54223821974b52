"""No request makes a 5xx other than a 503: every address, and the inputs that once did.

Every URL pattern is walked with GET, HEAD and OPTIONS, anonymously and as
staff, with ordinary and hostile values in each of its parameters.
"""

import re
from itertools import product

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404

from conversations.services import message_create
from tests.conftest import SERVICE_UNAVAILABLE

pytestmark = pytest.mark.django_db

# For each parameter of a pattern: values a person would send, then hostile ones.
ORDINARY = ["1", "c1", "json"]
HOSTILE = ["%00", "99999999999999999999", "-1", "..", "%20", "x" * 300]
GROUP = re.compile(r"\(\?P<(\w+)>([^()]*)\)|<(?:(\w+):)?(\w+)>")


def patterns(resolvers=None, prefix: str = ""):
    for entry in resolvers if resolvers is not None else get_resolver().url_patterns:
        if isinstance(entry, URLResolver):
            yield from patterns(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern)


def sample_paths(pattern: str) -> set[str]:
    """Concrete paths for a pattern: each parameter filled with each sample value."""
    text = pattern.replace("^", "").replace("$", "")
    slots = list(GROUP.finditer(text))
    choices = []
    for slot in slots:
        alternatives = slot[2].split("|") if slot[2] and "|" in slot[2] else []
        choices.append(alternatives or ORDINARY + HOSTILE)
    paths = set()
    for values in product(*choices):
        path, end = "", 0
        for slot, value in zip(slots, values, strict=True):
            path += text[end : slot.start()] + value
            end = slot.end()
        paths.add("/" + path + text[end:])
    return paths


def routable(path: str) -> bool:
    try:
        resolve(path.replace("%00", "\x00").replace("%20", " "))
    except Resolver404:
        return False
    return True


def every_path() -> list[str]:
    return sorted({path for pattern in patterns() for path in sample_paths(pattern)})


@pytest.fixture
def data():
    message_create(conversation_id="c1", sender="anson", message="hi")


@pytest.fixture
def staff_client():
    client = Client(raise_request_exception=False)
    client.force_login(User.objects.create_superuser("staff", password=None))
    return client


def test_the_walk_reaches_every_pattern():
    walked = {pattern for pattern in patterns() if any(map(routable, sample_paths(pattern)))}

    assert walked == set(patterns())


@pytest.mark.parametrize("as_staff", [False, True], ids=["anonymous", "staff"])
def test_no_address_answers_a_5xx_to_get_head_or_options(data, staff_client, as_staff):
    client = staff_client if as_staff else Client(raise_request_exception=False)
    failures = []
    for path in every_path():
        for method in ("get", "head", "options"):
            status = getattr(client, method)(path).status_code
            if status >= 500:
                failures.append((method.upper(), path, status))

    assert failures == []


@pytest.mark.parametrize(
    "query",
    [
        "created__year=99999999999999999999",
        "created__year=-99999999999999999999",
        "conversation__id__exact=%00",
        "sender=%00",
        "q=%00",
    ],
)
def test_hostile_changelist_filters_are_a_400(data, staff_client, query):
    response = staff_client.get(f"/admin/conversations/message/?{query}")

    assert response.status_code == 400


@pytest.mark.parametrize(
    "query",
    ["created__month=99999999999999999999", "id__gt=99999999999999999999", "q=" + "x" * 5000],
)
def test_out_of_range_changelist_filters_find_nothing(data, staff_client, query):
    response = staff_client.get(f"/admin/conversations/message/?{query}")

    assert response.status_code == 200
    assert "0 messages" in response.content.decode()


def test_a_nul_in_an_admin_object_id_is_a_400(data, staff_client):
    response = staff_client.get("/admin/conversations/conversation/%00/change/")

    assert response.status_code == 400


def test_options_on_the_api_docs_page_lists_its_methods():
    response = Client().options("/api/docs/")

    assert response.status_code == 200
    assert response["Allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/admin/", "/admin/login/", "/admin/conversations/message/"])
def test_with_the_database_down_admin_pages_are_the_503(unreachable_database, path):
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "a-session-the-database-would-hold"

    response = client.get(path)

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json() == SERVICE_UNAVAILABLE

"""The admin's login lockout: django-axes, counting each attempt before its password is checked.

django-axes checks for a lockout before the password is hashed and counts a
failure only after: 16 wrong passwords sent at once all pass the check, and
the right one sent a moment later passes it too, before any failure has been
counted. Here every attempt is counted first, as a failure, in one atomic
increment, and only an attempt that is within the limit, counting itself, goes
on to the password check: of 16 at once, 5 are checked and 11 refused.

Failures count per client address and per username (``AXES_LOCKOUT_PARAMETERS``),
and a successful login clears only its own account's failures from its own
address, so that logging in to one account does not wipe the count of
another.

The lockout page (``lockout_response``) looks like the admin, says what is
locked (this address, this account or both), until when, and whom to ask,
and answers ``429`` with ``Retry-After``. The attempts before it warn how many
are left.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied, AxesBackendRequestParameterRequired
from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import (
    get_client_username,
    get_credentials,
    get_failure_limit,
    get_lockout_message,
)
from axes.models import AccessAttempt, AccessLog
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib import messages
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Sum
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

# AccessAttempt's text columns are 255 characters: a longer username (the
# login form does not bound it) would fail the insert on PostgreSQL.
COLUMN_LENGTH = 255


def _username(request: HttpRequest, credentials: dict | None) -> str | None:
    username = get_client_username(request, credentials)
    return username[:COLUMN_LENGTH] if username else username


def _failures(**match: Any) -> tuple[int, datetime | None]:
    """Failures within the cool-off matching ``match``, and when the latest was."""
    threshold = timezone.now() - settings.AXES_COOLOFF_TIME
    totals = AccessAttempt.objects.filter(attempt_time__gte=threshold, **match).aggregate(
        failures=Sum("failures_since_start"), latest=Max("attempt_time")
    )
    return totals["failures"] or 0, totals["latest"]


def locks(request: HttpRequest, credentials: dict | None) -> dict[str, datetime]:
    """What is locked out now ("address", "account") and until when."""
    limit = get_failure_limit(request, credentials)
    username = _username(request, credentials)
    found = {}
    parameters = {"address": {"ip_address": request.axes_ip_address}}
    if username:
        parameters["account"] = {"username": username}
    for name, match in parameters.items():
        failures, latest = _failures(**match)
        if failures >= limit and latest is not None:
            found[name] = latest + settings.AXES_COOLOFF_TIME
    return found


class CountFirstHandler(AxesDatabaseHandler):
    """django-axes' database handler, with every attempt counted before it is checked."""

    def count_attempt(self, request: HttpRequest, credentials: dict | None) -> int:
        """Count this attempt as a failure; the failures, this one included, that now apply.

        Each increment commits before the count is read, so the attempts
        that read a count within the limit are at most the limit, however
        many run at once.
        """
        self.clean_expired_user_attempts(request, credentials)
        row = {
            "username": _username(request, credentials),
            "ip_address": request.axes_ip_address,
            "user_agent": request.axes_user_agent,
        }
        with transaction.atomic():
            updated = AccessAttempt.objects.filter(**row).update(
                failures_since_start=F("failures_since_start") + 1,
                attempt_time=request.axes_attempt_time,
            )
            if not updated:
                try:
                    with transaction.atomic():
                        AccessAttempt.objects.create(
                            **row,
                            get_data="",
                            post_data="",
                            http_accept=request.axes_http_accept,
                            path_info=request.axes_path_info,
                            failures_since_start=1,
                            attempt_time=request.axes_attempt_time,
                        )
                except IntegrityError:
                    # Another attempt created the row a moment ago.
                    AccessAttempt.objects.filter(**row).update(
                        failures_since_start=F("failures_since_start") + 1,
                        attempt_time=request.axes_attempt_time,
                    )
        return self.get_failures(request, credentials)

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs) -> None:
        """The failure is counted already; lock out at the limit, else warn."""
        if request is None:
            return
        username = _username(request, credentials)
        failures = self.get_failures(request, credentials)
        request.axes_failures_since_start = failures
        limit = get_failure_limit(request, credentials)
        if request.axes_locked_out or failures >= limit:
            request.axes_locked_out = True
            request.axes_credentials = credentials
            user_locked_out.send(
                "axes", request=request, username=username, ip_address=request.axes_ip_address
            )
            return
        if hasattr(request, "_messages"):
            left = limit - failures
            minutes = round(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
            messages.warning(
                request,
                f"{left} {'attempt' if left == 1 else 'attempts'} left: after {limit} failed "
                f"logins, logins from this address (and to this account) are paused for "
                f"{minutes} minutes.",
            )

    def user_logged_in(self, sender, request, user, **kwargs) -> None:
        """Log the login and clear this account's own failures from this address only."""
        if not settings.AXES_DISABLE_ACCESS_LOG:
            AccessLog.objects.create(
                username=user.get_username(),
                ip_address=request.axes_ip_address,
                user_agent=request.axes_user_agent,
                http_accept=request.axes_http_accept,
                path_info=request.axes_path_info,
                attempt_time=request.axes_attempt_time,
            )
        AccessAttempt.objects.filter(
            username=user.get_username()[:COLUMN_LENGTH], ip_address=request.axes_ip_address
        ).delete()


class CountFirstBackend(AxesStandaloneBackend):
    """First in AUTHENTICATION_BACKENDS: counts the attempt, and refuses it past the limit.

    An attempt it lets through goes on to ModelBackend's password check; a
    success then takes its count back (CountFirstHandler.user_logged_in).
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            raise AxesBackendRequestParameterRequired("The lockout needs the request.")
        if not settings.AXES_ENABLED:
            return None
        credentials = get_credentials(username=username, password=password, **kwargs)
        AxesProxyHandler.update_request(request)
        handler = AxesProxyHandler.get_implementation()
        if handler.is_whitelisted(request, credentials):
            return None
        if not handler.is_blacklisted(request, credentials):
            failures = handler.count_attempt(request, credentials)
            if failures <= get_failure_limit(request, credentials):
                return None
        kwargs.get("response_context", {})["error"] = get_lockout_message()
        request.axes_locked_out = True
        raise AxesBackendPermissionDenied("Locked out: too many failed logins.")


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """The ``429`` page: what is locked, until when, whom to ask; ``Retry-After``."""
    now = timezone.now()
    locked = locks(request, credentials)
    until = max(locked.values(), default=now + settings.AXES_COOLOFF_TIME)
    seconds = max(1, math.ceil((until - now).total_seconds()))
    response = TemplateResponse(
        request,
        "admin/lockout.html",
        {
            "title": "Logins paused",
            "site_header": "Django administration",
            "site_title": "Django site admin",
            "address": request.axes_ip_address,
            # An IPv6 client is its /64 (api.clients.client_network).
            "network": (
                f"{request.axes_ip_address}/64"
                if ":" in (request.axes_ip_address or "")
                else request.axes_ip_address
            ),
            "username": _username(request, credentials) or "",
            "address_locked": "address" in locked or not locked,
            "account_locked": "account" in locked,
            "failure_limit": get_failure_limit(request, credentials),
            "until": until,
            "minutes": math.ceil(seconds / 60),
            "contact": settings.ADMIN_CONTACT,
        },
        status=settings.AXES_HTTP_RESPONSE_CODE,
        headers={"Retry-After": str(seconds)},
    )
    return response.render()

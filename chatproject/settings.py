"""Settings for the chat-message service.

Every deploy-time choice is read from the environment; the README lists each
variable with its default.
"""

import math
import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_rate(name: str, default: str) -> str | None:
    """A rate in DRF's syntax (``120/min``), or None for ``off``.

    Checked here so that a typo stops the process at start instead of
    failing every request.
    """
    value = os.environ.get(name, default).strip()
    if value.lower() == "off":
        return None
    match = re.fullmatch(r"(\d+)/([smhd][a-z]*)", value)
    if not match or int(match[1]) == 0:
        raise ImproperlyConfigured(
            f"{name} must be a rate such as 120/min (a positive number per s, min, h or day) "
            f"or off, not {value!r}."
        )
    return value


def env_count(name: str, default: str) -> int:
    value = os.environ.get(name, default).strip()
    if not value.isascii() or not value.isdigit():
        raise ImproperlyConfigured(f"{name} must be a whole number (0 or more), not {value!r}.")
    return int(value)


def env_seconds(name: str, default: str) -> float:
    value = os.environ.get(name, default).strip()
    if not re.fullmatch(r"\d+(\.\d+)?", value):
        raise ImproperlyConfigured(
            f"{name} must be a number of seconds (0 or more), not {value!r}."
        )
    return float(value)


DEBUG = os.environ.get("DJANGO_DEBUG") == "1"

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is not 1.")
    SECRET_KEY = "django-insecure-local-development-only"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")

# The service sits behind a TLS-terminating proxy unless told otherwise.
HTTPS = os.environ.get("DJANGO_HTTPS", "0" if DEBUG else "1") == "1"
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = 31_536_000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
# The path prefix the service is mounted under behind a proxy (``/chat``), or
# none. Set here, never taken from the request: gunicorn copies a client's
# SCRIPT_NAME header into the environ, and Django would build every link on it.
FORCE_SCRIPT_NAME = os.environ.get("DJANGO_SCRIPT_NAME", "").strip().rstrip("/")
if FORCE_SCRIPT_NAME and not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", FORCE_SCRIPT_NAME):
    raise ImproperlyConfigured(
        f"DJANGO_SCRIPT_NAME must be empty or a path such as /chat, not {FORCE_SCRIPT_NAME!r}."
    )

# Load balancers and orchestrators probe over plain HTTP, without the proxy's
# X-Forwarded-Proto: a redirect to HTTPS would read as "not healthy".
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "axes",
    "corsheaders",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "conversations",
    "demo",
]

MIDDLEWARE = [
    # Outermost, so its log line times and sees every answer, redirects included.
    "api.requestlog.RequestLogMiddleware",
    # Outside everything that can answer on its own (CORS preflights,
    # whitenoise's static files), so every response gets its security headers.
    "chatproject.headers.SecurityHeadersMiddleware",
    # Before everything that checks the Host header: probes answer any Host.
    "chatproject.health.ProbesAnyHostMiddleware",
    # Before anything else that can answer on its own (the HTTPS redirect,
    # whitenoise), so a preflight gets its CORS headers.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's, for the admin's paths only (chatproject/adminonly.py).
    "chatproject.adminonly.RefuseNulMiddleware",
    "chatproject.adminonly.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "chatproject.adminonly.AuthenticationMiddleware",
    "chatproject.adminonly.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "chatproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The admin's lockout page (chatproject/lockout.py).
        "DIRS": [BASE_DIR / "chatproject" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "chatproject.wsgi.application"


def env_flag(name: str, default: str) -> bool:
    value = os.environ.get(name, default).strip()
    if value not in ("0", "1"):
        raise ImproperlyConfigured(f"{name} must be 0 or 1, not {value!r}.")
    return value == "1"


# A database that is stuck (a table locked, a host frozen) must cost a
# request a few seconds and a 503, not hold it, and with it one of the
# server's threads, until the client gives up. 0 turns one off.
DB_CONNECT_TIMEOUT = env_seconds("DJANGO_DB_CONNECT_TIMEOUT", "2")
DB_STATEMENT_TIMEOUT = env_seconds("DJANGO_DB_STATEMENT_TIMEOUT", "5")
DB_LOCK_TIMEOUT = env_seconds("DJANGO_DB_LOCK_TIMEOUT", "2")
# "startup": the statement and lock timeouts travel in the connection's
# startup packet (libpq's ``options``). "off": they are not sent, for a proxy
# that refuses that parameter (PgBouncer unless told to ignore it); set them
# on the database role instead (README, Settings).
DB_SERVER_TIMEOUTS = os.environ.get("DJANGO_DB_SERVER_TIMEOUTS", "startup").strip()
if DB_SERVER_TIMEOUTS not in ("startup", "off"):
    raise ImproperlyConfigured(
        f"DJANGO_DB_SERVER_TIMEOUTS must be startup or off, not {DB_SERVER_TIMEOUTS!r}."
    )
# The client's own deadline for a statement or a COMMIT: a server that is
# frozen cannot enforce its statement_timeout. A second later than the
# server's, so that a running server's clearer error comes first.
DB_CLIENT_DEADLINE = DB_STATEMENT_TIMEOUT + 1 if DB_STATEMENT_TIMEOUT else None

DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
# Migrations, and anything else that needs a session of its own (LISTEN),
# connect here rather than through a transaction-pooling PgBouncer.
DATABASE_DIRECT_URL = os.environ.get("DATABASE_DIRECT_URL") or DATABASE_URL
# A pooler sits between the service and the database: PgBouncer in transaction
# mode hands each transaction to any server connection, so a cursor WITH HOLD
# (Django's server-side cursors outside a transaction) would not survive.
DATABASE_POOLED = DATABASE_DIRECT_URL != DATABASE_URL
# psycopg prepares a statement after its fifth use on a connection; a
# transaction-pooling PgBouncer before 1.21 passes a prepared statement to
# whichever server connection comes next, which does not know it.
DATABASE_PREPARED_STATEMENTS = env_flag("DATABASE_PREPARED_STATEMENTS", "1")
DATABASE_REPLICA_URLS = env_list("DATABASE_REPLICA_URLS", "")
# A history read without a Consistency-Token may be served by a replica whose
# replay is at most this far behind the primary (conversations' freshness).
DATABASE_REPLICA_MAX_LAG = env_seconds("DATABASE_REPLICA_MAX_LAG", "1")
# For the scale test's negative control only (bench/scale.py): replicas judge
# every read by their lag alone, so a writer can read its history stale.
DATABASE_REPLICA_IGNORE_TOKEN = env_flag("DATABASE_REPLICA_IGNORE_TOKEN", "0")


def database(url: str, *, pooled: bool = False) -> dict:
    config = dj_database_url.parse(url, conn_max_age=600, conn_health_checks=True)
    if config["ENGINE"] == "django.db.backends.postgresql":
        # Django's backend with a cheaper test of a reused connection
        # (chatproject/postgresql/base.py): no SELECT 1 before each request, and
        # a deadline on the client's side for each statement.
        config["ENGINE"] = "chatproject.postgresql"
        options = config.setdefault("OPTIONS", {})
        if DB_CONNECT_TIMEOUT:
            # libpq counts whole seconds, and at least 2.
            options["connect_timeout"] = max(2, math.ceil(DB_CONNECT_TIMEOUT))
        server_timeouts = {
            "statement_timeout": DB_STATEMENT_TIMEOUT,
            "lock_timeout": DB_LOCK_TIMEOUT,
        }
        if DB_SERVER_TIMEOUTS == "startup":
            options["options"] = " ".join(
                [options.get("options", "")]
                + [
                    f"-c {name}={round(seconds * 1000)}"
                    for name, seconds in server_timeouts.items()
                ]
            ).strip()
        # Server-side parameters let psycopg prepare each statement after its
        # fifth use on a connection: the hot queries are then planned once per
        # connection instead of once per request. Safe with persistent
        # connections, and behind PgBouncer 1.21 or later
        # (max_prepared_statements); DATABASE_PREPARED_STATEMENTS=0 before it.
        prepare_threshold = 5 if DATABASE_PREPARED_STATEMENTS else None
        options.update(server_side_binding=True, prepare_threshold=prepare_threshold)
        config["DISABLE_SERVER_SIDE_CURSORS"] = pooled
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # IMMEDIATE takes the write lock when a transaction starts, and the busy
        # timeout makes a second writer wait for it instead of failing with
        # "database is locked". WAL lets readers run while a write is in progress.
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        # The test database is a file too, as in production: every connection
        # (and every thread) opens its own, and WAL and locking work as deployed.
        config["TEST"] = {"NAME": str(BASE_DIR / "test_db.sqlite3")}
    return config


DATABASES = {
    "default": database(DATABASE_URL, pooled=DATABASE_POOLED),
    # The same database, not through the pooler (the Procfile's release step
    # migrates through it). In tests it is the default connection's database.
    "direct": {**database(DATABASE_DIRECT_URL), "TEST": {"MIRROR": "default"}},
}
if DATABASE_REPLICA_URLS:
    if DATABASES["default"]["ENGINE"] != "chatproject.postgresql":
        raise ImproperlyConfigured(
            "DATABASE_REPLICA_URLS needs PostgreSQL: DATABASE_URL is not a postgres:// URL, "
            "and SQLite has no replicas. Unset DATABASE_REPLICA_URLS."
        )
    for number, url in enumerate(DATABASE_REPLICA_URLS, start=1):
        replica = database(url, pooled=DATABASE_POOLED)
        if replica["ENGINE"] != "chatproject.postgresql":
            raise ImproperlyConfigured(
                f"DATABASE_REPLICA_URLS: replica {number} is not a postgres:// URL."
            )
        # A replica that is down must cost a read little before the primary
        # answers: 2 s, the least libpq and psycopg take, whatever
        # DJANGO_DB_CONNECT_TIMEOUT says for the primary.
        replica["OPTIONS"]["connect_timeout"] = 2
        # A replica that hangs (frozen, a stuck host) must cost a read no more
        # than a second before the primary answers it.
        replica["CLIENT_DEADLINE"] = 1.0
        # Tests read the test database through it: it is the primary there.
        replica["TEST"] = {"MIRROR": "default"}
        DATABASES[f"replica{number}"] = replica
# Everything uses the primary, except the history reads that chatproject.replicas
# sends to a replica; no migration ever runs on a replica.
DATABASE_ROUTERS = ["chatproject.replicas.PrimaryRouter"]

# Live events (conversations/events.py). The LISTEN connection must reach the
# primary directly: a transaction-pooling PgBouncer would drop the LISTEN.
DATABASE_DIRECT_URL = os.environ.get("DATABASE_DIRECT_URL", "").strip()
EVENTS_HEARTBEAT_SECONDS = env_count("EVENTS_HEARTBEAT_SECONDS", "15")
EVENTS_MAX_SECONDS = env_count("EVENTS_MAX_SECONDS", "3600")
if not EVENTS_HEARTBEAT_SECONDS or not EVENTS_MAX_SECONDS:
    raise ImproperlyConfigured("EVENTS_HEARTBEAT_SECONDS and EVENTS_MAX_SECONDS must be over 0.")
# Bounds a worker's memory: each open stream holds its buffer and two tasks.
EVENTS_MAX_STREAMS = env_count("EVENTS_MAX_STREAMS", "2500")

# How many reverse proxies in front of the service append to X-Forwarded-For.
# The client is the address that many hops from the right; with 0 the header
# is ignored, since anyone can send it, and the client is REMOTE_ADDR.
TRUSTED_PROXIES = env_count("DJANGO_TRUSTED_PROXIES", "0")

# The rate limits' counters. Redis shares them between every worker and
# instance; without it each worker process counts on its own.
REDIS_URL = os.environ.get("REDIS_URL", "").strip()
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "chat",
            # A Redis that stops answering must not hold requests for long:
            # the rate limits then let requests through (api/throttles.py).
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            # The default of 300 entries would evict live counters as soon as
            # a few hundred clients are active, and let them start afresh.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

AUTHENTICATION_BACKENDS = [
    # First, so that every login attempt is counted before its password is
    # checked, and one past the limit is refused without a check.
    "chatproject.lockout.CountFirstBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# Admin logins (django-axes, chatproject/lockout.py): after 5 failures from
# one client address, or to one username, every login from that address or
# to that account is refused with a 429 for 15 minutes (from the latest
# attempt). Attempts live in the database, so the count is shared by every
# worker and survives restarts, with or without Redis; only logins pay for it.
AXES_HANDLER = "chatproject.lockout.CountFirstHandler"
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_LOCKOUT_CALLABLE = "chatproject.lockout.lockout_response"
# Clients by their canonical address, an IPv6 client by its /64, as for the rate limits.
AXES_CLIENT_IP_CALLABLE = "api.clients.lockout_address"
# Whom the lockout page tells people to ask (an address, a team's name).
ADMIN_CONTACT = os.environ.get("DJANGO_ADMIN_CONTACT", "").strip()

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# The admin's date and time formats (chatproject/formats/en/formats.py).
FORMAT_MODULE_PATH = "chatproject.formats"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django reads request bodies itself only for forms (the admin); the API's
# parser enforces its own limit of 256 KiB.
DATA_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["api.renderers.ORJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.BoundedJSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "api.renderers.JSONOnlyNegotiation",
    "EXCEPTION_HANDLER": "api.errors.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["api.throttles.ClientRateThrottle"],
    # Per client address. Generous on purpose: many people can share one
    # address (an office, a mobile carrier's NAT), and each open widget polls.
    "DEFAULT_THROTTLE_RATES": {
        "post": env_rate("RATE_LIMIT_POST", "120/min"),
        "get": env_rate("RATE_LIMIT_GET", "1200/min"),
    },
    "NUM_PROXIES": TRUSTED_PROXIES,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Chat-message service",
    "DESCRIPTION": (
        "Stores chat messages sent over HTTP and serves conversation history to chat widgets. "
        "Every path also works without (or, for conversations, with) its trailing slash. "
        "Responses are JSON whatever the Accept header says; every error is "
        "`application/problem+json` (RFC 9457)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # A message as sent (with the `converstaion_id` alias) and as returned
    # (with `id` and `created`) are different shapes.
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["conversations.schema.canonical_paths_only"],
    # drf-spectacular's own enum hook, then the answers every operation shares.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.common_responses",
    ],
    # /healthz's and /readyz's "status" and "database" share the one value "ok".
    "ENUM_NAME_OVERRIDES": {"Ok": ["ok"]},
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
    # Swagger UI's files come from the app (drf-spectacular-sidecar), not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Chat widgets on other sites call the API from the browser. Only the origins
# listed may read its answers; "*" alone allows every origin.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", "")
CORS_ALLOW_ALL_ORIGINS = CORS_ALLOWED_ORIGINS == ["*"]
if CORS_ALLOW_ALL_ORIGINS:
    CORS_ALLOWED_ORIGINS = []
elif "*" in CORS_ALLOWED_ORIGINS:
    raise ImproperlyConfigured("CORS_ALLOWED_ORIGINS is either '*' alone or a list of origins.")
CORS_URLS_REGEX = r"^/(messages|conversations)(/|$)"
CORS_ALLOW_METHODS = ["GET", "POST", "OPTIONS"]
# Last-Event-ID: what EventSource sends when it reconnects to an events stream.
CORS_ALLOW_HEADERS = [
    "content-type",
    "idempotency-key",
    "if-none-match",
    "last-event-id",
    "consistency-token",
]
CORS_EXPOSE_HEADERS = [
    "Location",
    "ETag",
    "Link",
    "Retry-After",
    "Idempotent-Replayed",
    "Consistency-Token",
]
CORS_PREFLIGHT_MAX_AGE = 86_400

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.orjson.OrjsonFormatter",
            "fmt": "{levelname}{name}{message}",
            "style": "{",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
        },
        # A rejected Host header is a client's doing, not a fault of the
        # service: its line says which, without Django's traceback.
        "json_without_traceback": {
            "()": "api.requestlog.WithoutTracebackFormatter",
            "fmt": "{levelname}{name}{message}",
            "style": "{",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
        },
    },
    "filters": {"request_id": {"()": "api.requestlog.RequestIdFilter"}},
    "handlers": {
        # Everything but the request lines, on stderr: one JSON line each, a
        # traceback included, with the id of the request it was logged for.
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["request_id"],
        },
        "console_without_traceback": {
            "class": "logging.StreamHandler",
            "formatter": "json_without_traceback",
            "filters": ["request_id"],
        },
        "requests": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
        },
    },
    "loggers": {
        "django.security.DisallowedHost": {
            "handlers": ["console_without_traceback"],
            "level": "ERROR",
            "propagate": False,
        },
        # One JSON line per request on stdout (api.requestlog), in
        # place of gunicorn's access log.
        "chatproject.requests": {"handlers": ["requests"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}

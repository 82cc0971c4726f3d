"""Settings for every environment, read from the environment (deploy/.env.example lists each variable).

With no environment at all the project runs on a SQLite file under var/, DEBUG on, Celery eager and
the sandbox CPO wired in: `make demo` needs nothing else. DATABASE_URL selects PostgreSQL;
CELERY_BROKER_URL selects a Redis broker with separate worker and beat processes.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from celery.schedules import crontab

from config.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", True)
# Note: the fallback key is only acceptable because DEBUG defaults to True; production sets SECRET_KEY.
SECRET_KEY = env_str("SECRET_KEY", "insecure-dev-key-change-me" if DEBUG else "")
if not SECRET_KEY:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# The address other parties use to reach us (OCPI response_url, versions URL). The demo overrides it
# with the address its server actually binds to.
PUBLIC_BASE_URL = env_str("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "common",
    "market",
    "aggregator",
    "settlement",
]
# The sandbox (simulated CPO and smart meters) is wired in only for demos and tests.
SANDBOX_ENABLED = env_bool("SANDBOX_ENABLED", DEBUG)
# The simulated CPO's faults and result delivery, "key=value,..." (sandbox/cpo.py): error_rate, garbage_rate,
# too_often_rate, latency_ms, down, results=task|thread.
SANDBOX_CPO_CONFIG = env_str("SANDBOX_CPO_CONFIG", "")
if SANDBOX_ENABLED:
    INSTALLED_APPS.append("sandbox")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- Database -------------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
    if env_bool("DB_SERVER_SIDE_BINDING", False):
        # psycopg binds parameters on the server and prepares a statement after it ran 5 times on a connection,
        # so PostgreSQL stops re-planning the hot queries (about 40% less database CPU per offer submission).
        # Not behind a transaction-mode pooler (PgBouncer), whose connections do not keep prepared statements.
        DATABASES["default"].setdefault("OPTIONS", {}).update({"server_side_binding": True, "prepare_threshold": 5})
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(VAR_DIR / "flexmarket.sqlite3")),
            # Note: the demo serves OCPI callbacks from server threads while the market day writes;
            # WAL + IMMEDIATE transactions + a busy timeout let SQLite take concurrent writers.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
            # A file (not :memory:) so server threads in tests get their own connections; one per test
            # process so parallel runs do not share it.
            "TEST": {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "market.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:dashboard"
LOGOUT_REDIRECT_URL = "portal:login"

# --- Time -----------------------------------------------------------------------------------------
LANGUAGE_CODE = "en"
USE_I18N = False
USE_TZ = True
TIME_ZONE = "UTC"  # stored and processed in UTC; market days are Europe/Amsterdam (common/isp.py)
MARKET_TIME_ZONE = "Europe/Amsterdam"

# --- Static files ---------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
WHITENOISE_USE_FINDERS = DEBUG  # in development, serve straight from static/ without collectstatic
if DEBUG:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing root otherwise
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Security (production differs only through the environment) -----------------------------------
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None
X_FRAME_OPTIONS = "DENY"

# --- REST API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "market.authentication.ApiKeyAuthentication",
        "market.authentication.ParticipantTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "common.api.CreatedAtCursorPagination",
    "DEFAULT_THROTTLE_CLASSES": ["common.throttling.ParticipantRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"participant": env_str("API_THROTTLE_RATE", "6000/min")},
    "DEFAULT_SCHEMA_CLASS": "common.schema.ErrorContractAutoSchema",
    "EXCEPTION_HANDLER": "common.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "DATETIME_FORMAT": "iso-8601",
    "COERCE_DECIMAL_TO_STRING": True,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Flexmarket bidding API",
    "DESCRIPTION": (
        "USEF flexibility trading for aggregators: read open flex requests on your congestion points, "
        "submit D-prognoses and flex offers, follow your orders and settlement statements. "
        "Power in integer watts (positive = consumption, a reduction is negative); money in EUR as decimal strings; "
        "times ISO-8601 with offset. Errors: {\"error\": {\"code\", \"message\", \"field\"}}."
    ),
    "VERSION": "1.0.0",
    "SCHEMA_PATH_PREFIX": "/api/v1/",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {},
}

# --- Cache (API throttling counters) ---------------------------------------------------------------------
# Throttle counts must be shared by every web process: use Redis in production (CACHE_URL=redis://...).
CACHE_URL = env_str("CACHE_URL", "")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
    if CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "flexmarket"}
}
# Idempotency-Key records are kept this long; a retry later than this is a new request.
IDEMPOTENCY_RETENTION_HOURS = env_int("IDEMPOTENCY_RETENTION_HOURS", 24)
# The clearing recommendation algorithm (a market.clearing.ClearingAlgorithm), by dotted path.
MARKET_CLEARING_ALGORITHM = env_str("MARKET_CLEARING_ALGORITHM", "market.clearing.CheapestCoverMilp")

# --- Celery ---------------------------------------------------------------------------------------
BROKER_CONFIGURED = bool(env_str("CELERY_BROKER_URL", ""))
# No broker: run tasks in-process (eagerly), so the demo and the default test run need no Redis.
# ("memory://" only keeps kombu from looking for a broker on localhost; nothing is queued there.)
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "") or "memory://localhost/"
CELERY_TASK_ALWAYS_EAGER = not BROKER_CONFIGURED
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = MARKET_TIME_ZONE
CELERY_TASK_ACKS_LATE = True  # a task whose worker dies mid-run is re-delivered; tasks are idempotent
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 600)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 540)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "aggregator.tasks.*": {"queue": "dispatch"},
    "sandbox.tasks.*": {"queue": "dispatch"},
    "settlement.tasks.*": {"queue": "settlement"},
    "market.tasks.*": {"queue": "market"},
    "aggregator.oscp.tasks.*": {"queue": "dispatch"},
}
CELERY_BEAT_SCHEDULE = {
    # OSCP: re-send due/lost outbox messages, heartbeats (+ peer offline alerts), tomorrow's capacity forecasts.
    "oscp-outbox-sweep": {"task": "aggregator.oscp.tasks.oscp_outbox_sweep_task", "schedule": 30.0},
    "oscp-heartbeats": {"task": "aggregator.oscp.tasks.oscp_heartbeats_task", "schedule": 10.0},
    "oscp-day-ahead-forecasts": {"task": "aggregator.oscp.tasks.oscp_day_ahead_forecasts_task",
                                 "schedule": crontab(hour=13, minute=30)},
    # Re-queues due retries, reclaims commands whose sending worker died, times out unanswered ones.
    "dispatch-sweep": {"task": "aggregator.tasks.dispatch_sweep_task",
                       "schedule": float(env_int("DISPATCH_SWEEP_INTERVAL_S", 30))},
    "market-expire-due": {"task": "market.tasks.expire_due_task", "schedule": 300.0},
    "idempotency-purge": {"task": "market.tasks.idempotency_purge_task", "schedule": 3600.0},
    "settlement-nightly": {
        "task": "settlement.tasks.settle_previous_day_task",
        "schedule": crontab(hour=2, minute=0),  # 02:00 Europe/Amsterdam (CELERY_TIMEZONE)
    },
}

# --- Outbound HTTP (common/http.py) ---------------------------------------------------------------
HTTP_CONNECT_TIMEOUT_S = float(env_str("HTTP_CONNECT_TIMEOUT_S", "5"))
HTTP_READ_TIMEOUT_S = float(env_str("HTTP_READ_TIMEOUT_S", "15"))

# --- Domain settings --------------------------------------------------------------------------------
# Aggregator cost model for pricing offers (aggregator/pricing.py).
AGGREGATOR_COMPENSATION_EUR_PER_KWH = env_str("AGGREGATOR_COMPENSATION_EUR_PER_KWH", "0.08")
AGGREGATOR_MARGIN_PCT = env_str("AGGREGATOR_MARGIN_PCT", "25")
# Session estimates and safety margins (aggregator/estimates.py, aggregator/portfolio.py): plans finish this many
# minutes before the departure (more when the departure is an estimate) and aim for more energy when it is estimated.
AGGREGATOR_DEPARTURE_MARGIN_MINUTES = env_int("AGGREGATOR_DEPARTURE_MARGIN_MINUTES", 15)
AGGREGATOR_ESTIMATED_DEPARTURE_MARGIN_MINUTES = env_int("AGGREGATOR_ESTIMATED_DEPARTURE_MARGIN_MINUTES", 60)
AGGREGATOR_ESTIMATED_ENERGY_MARGIN_PCT = env_int("AGGREGATOR_ESTIMATED_ENERGY_MARGIN_PCT", 10)
# A driver's history is used once it holds this many completed sessions (the most recent ones up to the maximum).
AGGREGATOR_HISTORY_MIN_SESSIONS = env_int("AGGREGATOR_HISTORY_MIN_SESSIONS", 3)
AGGREGATOR_HISTORY_MAX_SESSIONS = env_int("AGGREGATOR_HISTORY_MAX_SESSIONS", 20)
# Our OCPI identity as Smart Charging Service Provider.
OCPI_COUNTRY_CODE = env_str("OCPI_COUNTRY_CODE", "NL")
OCPI_PARTY_ID = env_str("OCPI_PARTY_ID", "FLX")
# OSCP outbox: attempts (transient failures, backoff + jitter) before a message becomes a dead letter.
OSCP_MAX_SEND_ATTEMPTS = env_int("OSCP_MAX_SEND_ATTEMPTS", 8)
# Key for secrets stored encrypted at rest (OCPI credentials tokens): a Fernet key, or any string (hashed into
# one); several comma-separated keys rotate (the first encrypts). Empty: derived from SECRET_KEY.
FIELD_ENCRYPTION_KEY = env_str("FIELD_ENCRYPTION_KEY", "")
# Dispatch outbox (aggregator/delivery.py): attempts before DEAD_LETTER, commands per Celery task, parallel
# HTTP calls per task, a SENDING claim's lease (then the sweeper reclaims it), the sweeper's interval, and the
# result timeout used when a CPO accepts without giving one.
DISPATCH_MAX_ATTEMPTS = env_int("DISPATCH_MAX_ATTEMPTS", 10)
DISPATCH_BATCH_SIZE = env_int("DISPATCH_BATCH_SIZE", 200)
DISPATCH_CONCURRENCY = env_int("DISPATCH_CONCURRENCY", 16)
DISPATCH_LEASE_S = env_int("DISPATCH_LEASE_S", 120)
DISPATCH_SWEEP_INTERVAL_S = env_int("DISPATCH_SWEEP_INTERVAL_S", 30)
DISPATCH_DEFAULT_RESULT_TIMEOUT_S = env_int("DISPATCH_DEFAULT_RESULT_TIMEOUT_S", 300)

# --- Logging --------------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        # In-process (eager) task runs would log every task at INFO; real workers log through celery's own -l.
        "celery.app.trace": {"level": LOG_LEVEL if BROKER_CONFIGURED else "WARNING"},
        "market.events": {"level": LOG_LEVEL if BROKER_CONFIGURED else "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")

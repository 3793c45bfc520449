"""Maskloop settings: one module, driven by the environment.

Defaults run everything on one machine with nothing to install: SQLite under the data dir,
a Celery worker on kombu's filesystem transport, Channels' in-memory layer. Production sets
``DATABASE_URL``, ``CELERY_BROKER_URL``, ``REDIS_URL``, ``SECRET_KEY``, ``ALLOWED_HOSTS`` and
``MASKLOOP_HTTPS=true`` (see docs/deploy.md).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
import django_stubs_ext

from annotator.env import SettingError, env_bool, env_int, env_list, env_str

# Lets the classes that type checkers see as generic (ModelAdmin[...]) be subscripted at run time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("MASKLOOP_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """The key from the environment, else one generated once and kept in the data dir."""
    key = env_str("SECRET_KEY")
    if key:
        return key
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Behind TLS in production; off by default so that http://127.0.0.1:8000 works locally.
HTTPS = env_bool("MASKLOOP_HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
if env_bool("MASKLOOP_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "annotator",
    "frontend",
]

MIDDLEWARE = [
    # First: request latency for Prometheus; then /healthz, /readyz and /metrics answered
    # before the host check and the HTTPS redirect (probes and scrapers use the pod's address).
    "annotator.metrics.MetricsMiddleware",
    "annotator.health.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "annotator.urls"
WSGI_APPLICATION = "annotator.wsgi.application"
ASGI_APPLICATION = "annotator.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'maskloop.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the embedded worker write concurrently: wait for the lock, and use
    # WAL so that readers never block the writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    # Tests with a worker thread need the same file + WAL behaviour as the real default, not
    # the in-memory shared cache (table-level locks).
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-maskloop.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(DATA_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media")))
# Media are never served as public files: every image goes through a view that checks the
# user's membership of its project.
MEDIA_URL = "/media-not-public/"
STORAGES: dict[str, dict[str, object]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Images, embeddings, checkpoints and exports in an S3-compatible bucket (AWS, MinIO, ...)
# when one is named; credentials may also come from boto3's own chain (instance roles).
S3_BUCKET = env_str("MASKLOOP_S3_BUCKET")
if S3_BUCKET:
    _s3_endpoint = env_str("AWS_S3_ENDPOINT_URL") or None
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "location": env_str("MASKLOOP_S3_PREFIX"),
            "endpoint_url": _s3_endpoint,
            "region_name": env_str("AWS_S3_REGION_NAME") or None,
            "access_key": env_str("AWS_ACCESS_KEY_ID") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY") or None,
            # MinIO and other self-hosted stores answer on path-style URLs.
            "addressing_style": env_str("AWS_S3_ADDRESSING_STYLE", "path" if _s3_endpoint else "")
            or None,
            # As on local disk: a name in use gets a suffix, never overwrites; nothing public.
            "file_overwrite": False,
            "default_acl": None,
            "querystring_auth": True,
        },
    }
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project-list"
LOGOUT_REDIRECT_URL = "login"

# Uploads: many images at once; the per-image pixel limit is checked before decoding.
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("MASKLOOP_MAX_UPLOAD_FILES", 1000)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MASKLOOP_MAX_REQUEST_BYTES", 50 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
MASKLOOP_MAX_IMAGE_PIXELS = env_int("MASKLOOP_MAX_IMAGE_PIXELS", 100_000_000)
MASKLOOP_MAX_IMAGE_BYTES = env_int("MASKLOOP_MAX_IMAGE_BYTES", 200 * 1024 * 1024)
# Torch threads per process: the web process and the worker share the machine, and two
# processes each using every core stall each other (measured 10-20x slower on 2 cores).
# A running job whose worker gave no sign of life for this long is taken as lost: a new job
# of the same kind and key may then start (the automatic stage resumes where it stopped).
MASKLOOP_JOB_STALE_SECONDS = env_int("MASKLOOP_JOB_STALE_SECONDS", 900)
# Retraining cycles keep their snapshot and checkpoints here (a killed cycle resumes from them).
MASKLOOP_TRAINING_DIR = Path(env_str("MASKLOOP_TRAINING_DIR", str(DATA_DIR / "training")))
# Training processes of a retraining cycle: 0 = one per GPU the worker sees; > 1 launches each
# chunk under torchrun (gloo on a CPU, NCCL on GPUs; docs/deploy.md).
MASKLOOP_TRAIN_PROCESSES = env_int("MASKLOOP_TRAIN_PROCESSES", 0)
# Images per Celery task of the automatic stage (several gpu workers share a job by chunks).
MASKLOOP_AUTOMATIC_CHUNK = env_int("MASKLOOP_AUTOMATIC_CHUNK", 8)
MASKLOOP_TORCH_THREADS = env_int("MASKLOOP_TORCH_THREADS", max(1, (os.cpu_count() or 2) // 2))
# Clicks after an object's first are answered on a crop around it (model/zoom.py).
MASKLOOP_ZOOM_IN = env_bool("MASKLOOP_ZOOM_IN", True)
# Version 0 of new projects: the shipped starter checkpoint by default, a path to another, or
# "none" to start projects with GrabCut only.
MASKLOOP_STARTER_CHECKPOINT = env_str("MASKLOOP_STARTER_CHECKPOINT", "")
# Server-side import folders are allowed only under these roots (DECISIONS 16).
IMPORT_ROOTS = [Path(p).resolve() for p in env_list("IMPORT_ROOTS", [])]
# Export files are deleted (and their download answers 404) this many hours after they are made.
EXPORT_TTL_HOURS = env_int("EXPORT_TTL_HOURS", 72)
# Largest archive or JSON accepted for a dataset import (bytes, unpacked).
MASKLOOP_MAX_IMPORT_BYTES = env_int("MASKLOOP_MAX_IMPORT_BYTES", 20 * 1024 * 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an unauthenticated request then gets 401 with WWW-Authenticate.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "annotator.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Maskloop API",
    "DESCRIPTION": "Projects, images, masks, jobs and model versions of a Maskloop server.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "StageEnum": "annotator.models.Stage.choices",
        "VerificationKindEnum": "annotator.models.VerificationDecision.Kind",
    },
}

# Channels: in-memory on one process by default, Redis when several processes serve.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s timeout by default, the same 5 s the layer's blocking
            # pop waits on the server: an idle socket's read then timed out and the consumer
            # died (1011, every 5 s). A longer client timeout still ends a dead connection.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery: the embedded default needs no broker server (DECISIONS 8): kombu's filesystem
# transport in the data dir, shared by the web process and the worker it starts.
BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
# Job state lives in our Job table; Celery keeps no results of its own.
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or None
CELERY_TASK_DEFAULT_QUEUE = "cpu"
# Surviving lost hosts, a restarted broker and a restarted database (docs/multihost.md; tested
# by tests/multihost across network namespaces). Every task may run twice: the job claim
# (engine.jobs.run) and the once-per-job image write (engine.stages.automatic) make that safe.
#
# Acknowledge a task's message when it has finished, not when it starts: a worker host that
# dies mid-task leaves the message unacknowledged, and the broker hands it to another worker.
CELERY_TASK_ACKS_LATE = True
# A pool process killed under a task (OOM killer, SIGKILL) requeues the message instead of
# acknowledging it as failed.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message reserved per pool process. With late acks the one it runs is that message, so a
# gpu worker (--pool solo: one model in memory) never holds chunks that an idle gpu worker on
# another host could run, and a lost host takes no queued work down with it.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# The longest task is a retraining cycle on a gpu worker. Past the soft limit the task gets
# SoftTimeLimitExceeded and its job fails saying so; at the hard limit a prefork worker kills
# the process. (--pool solo cannot enforce limits: there the reconciler below and the stale
# check, MASKLOOP_JOB_STALE_SECONDS, stand in.)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 24 * 3600)
CELERY_TASK_SOFT_TIME_LIMIT = max(
    1, CELERY_TASK_TIME_LIMIT - min(600, CELERY_TASK_TIME_LIMIT // 10)
)
# A late-acked message not acknowledged within the visibility timeout is given to another worker
# (Redis, SQS). It must outlast the longest task, or a task still running would be run a second
# time beside it; a lost host's tasks come back sooner through the reconciler.
MASKLOOP_BROKER_VISIBILITY_TIMEOUT = CELERY_TASK_TIME_LIMIT + 3600
if not CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": MASKLOOP_BROKER_VISIBILITY_TIMEOUT}
# A worker that loses the broker lets its running tasks finish: their results are in the
# database, and the message of a task that cannot be acknowledged any more is either still in
# the broker (redelivered, then skipped as done) or lost with it (re-sent by the reconciler).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# The reconciler (engine.jobs.reconcile, sent by beat every MASKLOOP_JOB_RECONCILE_SECONDS)
# sends again the tasks of a job that made no progress for MASKLOOP_JOB_REDISPATCH_SECONDS:
# the broker lost them (Redis keeps nothing across a restart here) or their host died. That
# period must exceed the longest gap between two signs of life of a job (one image of the
# automatic stage, with the model loaded), and stay below MASKLOOP_JOB_STALE_SECONDS.
MASKLOOP_JOB_REDISPATCH_SECONDS = env_int("MASKLOOP_JOB_REDISPATCH_SECONDS", 600)
MASKLOOP_JOB_RECONCILE_SECONDS = env_int("MASKLOOP_JOB_RECONCILE_SECONDS", 60)

# Operations (docs/deploy.md): /metrics is open on loopback, or to this bearer token.
MASKLOOP_METRICS_TOKEN = env_str("MASKLOOP_METRICS_TOKEN")
# Each /readyz check (database, broker, channel layer, storage) gets this many seconds.
MASKLOOP_READYZ_TIMEOUT = env_int("MASKLOOP_READYZ_TIMEOUT", 3)
# A Celery worker serves its own /metrics on this port when set (workers on other hosts).
MASKLOOP_WORKER_METRICS_PORT = env_int("MASKLOOP_WORKER_METRICS_PORT", 0)
# prometheus_client's multiprocess mode: every process of this host (daphne, the embedded
# worker, worker processes) writes its figures here and /metrics adds them up. Set in the
# environment before prometheus_client is imported (annotator.metrics imports it later).
PROMETHEUS_MULTIPROC_DIR = Path(env_str("PROMETHEUS_MULTIPROC_DIR", str(DATA_DIR / "prometheus")))
PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(PROMETHEUS_MULTIPROC_DIR)

# MASKLOOP_LOG_FORMAT=json: one JSON object per line, with the job id, kind and project on
# every record a job logs (annotator/logs.py).
LOG_FORMAT = env_str("MASKLOOP_LOG_FORMAT", "text").strip().lower()
if LOG_FORMAT not in {"text", "json"}:
    raise SettingError(f"MASKLOOP_LOG_FORMAT={LOG_FORMAT!r} is not text or json")
# Celery replaces the root logger's handlers unless told not to; JSON logs keep ours.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "annotator.logs.ContextFilter"}},
    "formatters": {
        "text": {"format": "%(message)s"},
        "json": {"()": "annotator.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["context"],
            "formatter": LOG_FORMAT,
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

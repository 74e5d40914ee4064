"""Settings for the DESOM archive. Every setting reads an environment variable and has a
working default, so `manage.py` runs on a fresh clone with an embedded SQLite database."""
from pathlib import Path
import os

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-insecure-key-change-me" if DEBUG else "")
if not SECRET_KEY:
    raise RuntimeError("SECRET_KEY must be set when DEBUG is off")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")

# Where exposures' derived data live: the SQLite file, model checkpoints, FAISS indexes, previews.
ARCHIVE_DATA_DIR = Path(os.environ.get("ARCHIVE_DATA_DIR", BASE_DIR / "var")).resolve()
ARCHIVE_DATA_DIR.mkdir(parents=True, exist_ok=True)

# Address of a Dask scheduler for ingest; empty means a local cluster on this machine.
DASK_SCHEDULER = os.environ.get("DASK_SCHEDULER", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_tasks",
    "django_tasks_db",
    "archive",
    "recommender",
]

MIDDLEWARE = [
    # The real client address first: nothing below reads a forwarded header a client forged.
    "config.middleware.ClientAddressMiddleware",
    # A body sent chunked (STILTS, TOPCAT uploads) read with its length, within the route's limit.
    "config.chunked.ChunkedBodyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (CSS, the API docs' JavaScript) straight from STATIC_ROOT, with or without DEBUG.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Oversized bodies and NUL characters refused before sessions and CSRF read the body.
    "config.middleware.RequestLimitsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Authorization: Token <secret> on every route (API, downloads, previews, figures, VO).
    "archive.authentication.TokenAuthenticationMiddleware",
    # Values a request reads several times (the active models, the cells' labels), once a request.
    "archive.memo.RequestMemoMiddleware",
    "config.middleware.PrivateAnswersMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Project-wide templates (the base layout, the login page) beside manage.py; each app's
        # own pages stay in <app>/templates/<app-area>/ (APP_DIRS).
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

WSGI_APPLICATION = "config.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{ARCHIVE_DATA_DIR / 'archive.sqlite3'}"),
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", ARCHIVE_DATA_DIR / "static")).resolve()
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# In production (DEBUG off) static files are collected (make serve runs collectstatic) under
# content-hashed names, compressed, and served by WhiteNoise with far-future cache headers.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage" if DEBUG
                    else "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/accounts/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "archive.authentication.AccessTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # REMOTE_ADDR already holds the real client (config.middleware.ClientAddressMiddleware):
    # DRF must not read X-Forwarded-For itself.
    "NUM_PROXIES": 0,
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "config.exceptions.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {"uploads": os.environ.get("UPLOAD_THROTTLE_RATE", "30/min"),
                               "login": os.environ.get("LOGIN_THROTTLE_RATE", "10/min")},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "DESOM exposure archive",
    "DESCRIPTION": "Content-based search and quality flags for wide-field exposures.",
    "VERSION": "0.1.0",
    # Swagger and ReDoc assets are served from the installed sidecar package, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Every operation's 4xx/503 answers, with the one error shape (config.openapi).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "config.openapi.add_error_responses"],
    # Two models have a "status" field with different choices; name their enums apart.
    "ENUM_NAME_OVERRIDES": {
        "ExposureStatusEnum": "archive.models.Exposure.STATUS_CHOICES",
        "IngestRunStatusEnum": "archive.models.IngestRun.STATUS_CHOICES",
    },
}

# Source detection backend for every imaging path of the archive (ingest, training, uploads):
# "sep" (Source Extractor's library) or "photutils". The same exposure must meet the same
# detector wherever it enters, or its histo-vector would not compare with the archive's.
ARCHIVE_DETECTOR = os.environ.get("ARCHIVE_DETECTOR", "sep")

# Proprietary period applied when a file carries no REL_DATE (days after observation).
ARCHIVE_DEFAULT_PROPRIETARY_DAYS = int(os.environ.get("ARCHIVE_DEFAULT_PROPRIETARY_DAYS", "365"))
# Largest exposure or cutout a user may upload for a search, in bytes.
ARCHIVE_MAX_UPLOAD_BYTES = int(os.environ.get("ARCHIVE_MAX_UPLOAD_BYTES", str(64 * 1024 * 1024)))
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# The Virtual Observatory: most pixels in one SODA cutout; longest a TAP query may run (seconds).
SODA_MAX_PIXELS = int(os.environ.get("SODA_MAX_PIXELS", str(20_000_000)))
TAP_TIMEOUT_S = float(os.environ.get("TAP_TIMEOUT_S", "10"))
# TAP_UPLOAD: tables per query, bytes and rows per table (refused before they are parsed).
TAP_UPLOAD_MAX_TABLES = int(os.environ.get("TAP_UPLOAD_MAX_TABLES", "3"))
TAP_UPLOAD_MAX_BYTES = int(os.environ.get("TAP_UPLOAD_MAX_BYTES", str(8 * 1024 * 1024)))
TAP_UPLOAD_MAX_ROWS = int(os.environ.get("TAP_UPLOAD_MAX_ROWS", "20000"))
TAP_UPLOAD_BODY_BYTES = TAP_UPLOAD_MAX_TABLES * TAP_UPLOAD_MAX_BYTES
# TAP async (UWS): default and longest run of a job (s), how long a job and its result are kept
# (s), how many jobs one client may have queued or running, and kept in all.
TAP_ASYNC_DEFAULT_DURATION_S = int(os.environ.get("TAP_ASYNC_DEFAULT_DURATION_S", "600"))
TAP_ASYNC_MAX_DURATION_S = int(os.environ.get("TAP_ASYNC_MAX_DURATION_S", "3600"))
TAP_ASYNC_LIFETIME_S = int(os.environ.get("TAP_ASYNC_LIFETIME_S", str(7 * 24 * 3600)))
TAP_ASYNC_MAX_ACTIVE = int(os.environ.get("TAP_ASYNC_MAX_ACTIVE", "3"))
TAP_ASYNC_MAX_JOBS = int(os.environ.get("TAP_ASYNC_MAX_JOBS", "100"))
# A running job's worker beats every fifth of this; a job whose last beat is older is in ERROR.
TAP_ASYNC_STALL_S = float(os.environ.get("TAP_ASYNC_STALL_S", "30"))
# The task runner that executes TAP jobs: django-tasks with its database backend (the archive's
# own database is the queue; `manage.py tap_worker` runs them).
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default", "tap"]}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING").upper()},
}

# --- Security and API limits (owned by the VO/hardening work; keep at the end of the file) -----
# Pagination with a client-chosen page size capped at MAX_PAGE_SIZE, and a rate limit on the
# experts' writes (cell labels, prototype flags).
REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"] = "archive.api.pagination.ArchivePagination"
# Totals are counted up to this many rows (then "count_exact": false): an exact count of a broad
# filter over a million exposures costs a scan of every match.
API_COUNT_CAP = int(os.environ.get("API_COUNT_CAP", "10000"))
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["writes"] = os.environ.get("WRITE_THROTTLE_RATE", "60/min")

# With DEBUG off the site is served over HTTPS only: secure cookies, HSTS, redirects, and no
# MIME sniffing. Behind a TLS-terminating proxy set SECURE_PROXY_SSL_HEADER_NAME (for example
# HTTP_X_FORWARDED_PROTO); for plain-HTTP local runs set SECURE_SSL_REDIRECT=0.
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SESSION_COOKIE_HTTPONLY = True
    X_FRAME_OPTIONS = "DENY"
    if os.environ.get("SECURE_PROXY_SSL_HEADER_NAME"):
        SECURE_PROXY_SSL_HEADER = (os.environ["SECURE_PROXY_SSL_HEADER_NAME"], "https")
    CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", ",".join(f"https://{h.lstrip('.')}" for h in ALLOWED_HOSTS
                                                                     if h not in ("*",)))

# --- Serving: shared cache, trusted proxies, tokens, upload bounds, error shapes ---------------
# The cache every worker process shares (throttles count there). CACHE_URL: "db" (default: a
# table in DATABASE_URL's database, made by migrate), "file:///path" (one host), "redis://..."
# (Django's Redis backend; pip install redis) or "locmem" (one process: development only).
CACHE_URL = os.environ.get("CACHE_URL", "db")
if CACHE_URL == "db":
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "archive_cache",
                          "OPTIONS": {"MAX_ENTRIES": 100_000, "CULL_FREQUENCY": 4}}}
elif CACHE_URL.startswith("file://"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                          "LOCATION": CACHE_URL[len("file://"):]}}
elif CACHE_URL.startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
elif CACHE_URL == "locmem":
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
else:
    raise RuntimeError(f"CACHE_URL {CACHE_URL!r}: use db, file:///path, redis://host:port/db or locmem")

# Addresses (or CIDR blocks) of the reverse proxies in front of the server. Only their
# X-Forwarded-For / X-Forwarded-Proto are believed; from anyone else those headers are dropped.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", "")

# FAISS index files are memory-mapped, so the worker processes share one copy of the vectors
# (recommender.indexes); 0 loads a private copy into each process instead.
ARCHIVE_INDEX_MMAP = env_bool("ARCHIVE_INDEX_MMAP", True)
# FAISS searches on a GPU copy of each index: auto (default) when faiss is a GPU build that sees
# a GPU (requirements-gpu.txt), 1 to ask for it (the CPU, with a warning, where there is none),
# 0 never. Each worker process holds its own GPU copy of the indexes it has loaded.
ARCHIVE_FAISS_GPU = os.environ.get("ARCHIVE_FAISS_GPU", "auto").strip().lower()
if ARCHIVE_FAISS_GPU not in {"auto", "", "1", "true", "yes", "on", "0", "false", "no", "off"}:
    raise RuntimeError(f"ARCHIVE_FAISS_GPU {ARCHIVE_FAISS_GPU!r}: use auto, 1 or 0")

# Tokens for scripts (POST /api/token/): days until a new token expires (0: never).
ARCHIVE_TOKEN_DAYS = int(os.environ.get("ARCHIVE_TOKEN_DAYS", "365"))

# Uploaded exposures (search by example) are bounded before any pixel is decoded: HDUs (a
# MegaCam exposure has a primary and 40 CCDs), pixels over all images (by default about twelve
# MegaCam CCDs, some twelve seconds of imaging), and bytes of the decompressed stream: 2.5 times
# the upload limit, more than gzip gains on sky images, and what zlib inflates in about half a
# second on this project's 2-core machine (so a refusal after the last allowed HDU stays quick).
ARCHIVE_UPLOAD_MAX_HDUS = int(os.environ.get("ARCHIVE_UPLOAD_MAX_HDUS", "41"))
ARCHIVE_UPLOAD_MAX_PIXELS = int(os.environ.get("ARCHIVE_UPLOAD_MAX_PIXELS", str(120_000_000)))
ARCHIVE_UPLOAD_MAX_DECOMPRESSED_BYTES = int(os.environ.get("ARCHIVE_UPLOAD_MAX_DECOMPRESSED_BYTES",
                                                           str(ARCHIVE_MAX_UPLOAD_BYTES * 5 // 2)))
ARCHIVE_CUTOUT_MAX_BYTES = 512 * 1024
# Routes that take a file, and the setting that bounds their body (config.middleware.body_limit).
ARCHIVE_UPLOAD_ROUTES = {"/api/search/exposure/": "ARCHIVE_MAX_UPLOAD_BYTES",
                         "/search/upload/": "ARCHIVE_MAX_UPLOAD_BYTES",
                         "/api/search/cutout/": "ARCHIVE_CUTOUT_MAX_BYTES",
                         "/tap/sync": "TAP_UPLOAD_BODY_BYTES", "/tap/async": "TAP_UPLOAD_BODY_BYTES"}
FILE_UPLOAD_TEMP_DIR = os.environ.get("FILE_UPLOAD_TEMP_DIR") or None

# How each surface answers an error (config.errors): JSON for the API, a VOTable for the VO
# routes (a new VO route adds its prefix here), HTML for everything else.
ARCHIVE_ERROR_SURFACES = [("/api/", "config.errors.json_error"), ("/sia2/", "config.errors.votable_error"),
                          ("/tap/", "config.errors.votable_error"), ("/datalink/", "config.errors.votable_error"),
                          ("/soda/", "config.errors.votable_error"), ("/scs/", "config.errors.votable_error")]

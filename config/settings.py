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
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "archive",
    "recommender",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"

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
STATIC_ROOT = ARCHIVE_DATA_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/accounts/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "config.exceptions.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {"uploads": os.environ.get("UPLOAD_THROTTLE_RATE", "120/min")},
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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}

# --- Security and API limits (owned by the VO/hardening work; keep at the end of the file) -----
# Pagination with a client-chosen page size capped at MAX_PAGE_SIZE, and a rate limit on the
# experts' writes (cell labels, prototype flags).
REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"] = "archive.api.pagination.ArchivePagination"
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

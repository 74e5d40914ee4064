"""Gunicorn settings for `make serve` (every value from the environment, like the Django
settings). Why gunicorn, and why these choices, is in README "Deployment".

Searches are CPU-bound Python (the GIL): throughput grows with processes, so the default is one
worker per core, each with a couple of threads so a slow client or a download does not hold a
whole process. Workers are forked from a master that imported the application first
(preload_app), so torch, FAISS and Django's code pages are shared; the FAISS indexes are
memory-mapped files (recommender.indexes), shared by every worker through the page cache.
"""
import gc
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 2)))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
# A search by an uploaded exposure images it (tens of seconds at the upload limits).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
backlog = int(os.environ.get("GUNICORN_BACKLOG", "2048"))
# Recycle workers now and then: any slow leak (a library's cache) is bounded.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "5000"))
max_requests_jitter = max_requests // 10
preload_app = True
# Request line and headers bounded before Django sees them.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# Only the configured proxies may set X-Forwarded-Proto (wsgi.url_scheme); the same list as
# Django's TRUSTED_PROXIES (config.middleware), empty by default: nobody.
forwarded_allow_ips = os.environ.get("TRUSTED_PROXIES", "")
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
proc_name = "desom-archive"
# gunicorn's control socket (one path per user by default) is not used: disabled, so several
# servers (the load benchmark's) can run side by side.
control_socket_disable = True

# One math thread per worker: N workers x N OpenMP threads would fight over N cores.
for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(name, os.environ.get("WORKER_MATH_THREADS", "1"))


def pre_fork(server, worker):
    # Move everything the master imported (Django, torch, FAISS, astropy) out of the garbage
    # collector's reach: a worker's collections then never walk (and copy-on-write) those
    # pages, so they stay shared, and a worker exits in milliseconds instead of a full
    # collection over the whole preloaded application.
    gc.freeze()


def post_fork(server, worker):
    try:
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    except Exception:   # torch is only needed for uploads; serving goes on without it
        pass


def worker_exit(server, worker):
    # Skip the interpreter's finalisation, which would walk (and un-share) every object of the
    # preloaded application for nothing: the process is going away. Connections close with it.
    import logging
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def on_exit(server):
    logging_and_exit = worker_exit
    logging_and_exit(server, None)

"""The worker that runs TAP async jobs: django-tasks' database worker on the queue "tap", with
a watcher beside it that puts jobs whose worker died in ERROR and destroys expired ones
(`recommender.vo.uws.reap`). Run one or more beside the web server (`make serve` starts one)."""
import threading

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connections

from recommender.vo import uws


def _watch(stopped: threading.Event, every: float) -> None:
    while not stopped.wait(every):
        try:
            uws.reap()
        except Exception:          # a database hiccup: try again next round
            uws.logger.exception("TAP worker: reaping jobs failed")
        finally:
            connections.close_all()


class Command(BaseCommand):
    help = "Run TAP async jobs (UWS) from the database queue; stop with Ctrl+C or SIGTERM"

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=0.5,
                            help="seconds between looks at an empty queue (default 0.5)")
        parser.add_argument("--batch", action="store_true", help="run what is queued, then exit")

    def handle(self, *args, interval, batch, verbosity, **options):
        uws.reap()
        stopped = threading.Event()
        watcher = threading.Thread(target=_watch, args=(stopped, max(uws.stall_s() / 2, 0.5)), daemon=True,
                                   name="tap-reaper")
        watcher.start()
        try:
            call_command("db_worker", queue_name="tap", interval=interval, batch=batch, reload=False,
                         startup_delay=False, verbosity=verbosity)
        finally:
            stopped.set()

from django.core.management.base import BaseCommand, CommandError

from archive.services.assign import AssignmentError, assign


class Command(BaseCommand):
    help = ("Bring every science exposure up to the active models: histo-vectors under the active "
            "DESOM-1, cells under the active DESOM-2.")

    def add_arguments(self, parser):
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--scheduler", default=None)
        parser.add_argument("--recompute", action="store_true", help="recompute cells that already exist")

    def handle(self, *args, **opts):
        try:
            report = assign(workers=opts["workers"], scheduler=opts["scheduler"], progress=opts["verbosity"] > 0,
                            recompute_cells=opts["recompute"])
        except AssignmentError as exc:
            raise CommandError(str(exc)) from exc
        for line in report.lines():
            self.stdout.write(line)

from django.core.management.base import BaseCommand, CommandError

from archive.services.ingest import ingest
from desom.detection import detector_names


class Command(BaseCommand):
    help = ("Ingest FITS exposures (files, folders, globs). Files already in the archive with the same "
            "checksum are skipped; each failure is recorded and the rest go on. Rerun to resume.")

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+")
        add_imaging_arguments(parser, detector_help="source detection backend")
        parser.add_argument("--no-model", action="store_true",
                            help="metadata and detections only; vectors come later from `assign`")

    def handle(self, *args, **opts):
        config = imaging_options(opts)
        report = ingest(opts["paths"], scheduler=opts["scheduler"], workers=opts["workers"],
                        batch_size=opts["batch_size"], imaging_config=config,
                        progress=opts["verbosity"] > 0, with_model=not opts["no_model"])
        for line in report.lines():
            self.stdout.write(line)


def add_imaging_arguments(parser, *, detector_help: str) -> None:
    """Where imaging runs and with which detector: the options of every command that reads files."""
    parser.add_argument("--workers", type=int, default=2,
                        help="local Dask workers; 0 runs in this process (default 2)")
    parser.add_argument("--scheduler", default=None,
                        help="address of a Dask scheduler (default: DASK_SCHEDULER, else a local cluster)")
    parser.add_argument("--batch-size", type=int, default=25, help="exposures per database transaction")
    parser.add_argument("--detector", choices=detector_names(), default=None,
                        help=f"{detector_help} (default: the ARCHIVE_DETECTOR setting)")


def imaging_options(opts):
    """The ImagingConfig the options ask for; refuses a negative worker count."""
    from archive.services.versions import imaging_config

    if opts["workers"] < 0:
        raise CommandError("--workers must be 0 or more")
    return imaging_config(detector=opts["detector"]) if opts["detector"] else imaging_config()

from django.core.management.base import BaseCommand, CommandError

from archive.services.ingest import measure_missing_statistics
from desom.detection import detector_names


class Command(BaseCommand):
    help = ("Measure the five source statistics (desom.baseline.FEATURE_NAMES) of the science exposures "
            "ingested before the archive stored them, re-reading their files; DESOM-2 trained with "
            "--features histo+stats needs them. Failures are listed and the rest go on; rerun to resume.")

    def add_arguments(self, parser):
        parser.add_argument("--workers", type=int, default=2,
                            help="local Dask workers; 0 runs in this process (default 2)")
        parser.add_argument("--scheduler", default=None,
                            help="address of a Dask scheduler (default: DASK_SCHEDULER, else a local cluster)")
        parser.add_argument("--batch-size", type=int, default=25, help="exposures per database transaction")
        parser.add_argument("--detector", choices=detector_names(), default=None,
                            help="the detector the exposures were ingested with (default: the ARCHIVE_DETECTOR setting)")

    def handle(self, *args, **opts):
        from archive.services.versions import imaging_config

        if opts["workers"] < 0:
            raise CommandError("--workers must be 0 or more")
        config = imaging_config(detector=opts["detector"]) if opts["detector"] else imaging_config()
        report = measure_missing_statistics(workers=opts["workers"], scheduler=opts["scheduler"],
                                            batch_size=opts["batch_size"], imaging_config=config,
                                            progress=opts["verbosity"] > 0)
        for line in report.lines():
            self.stdout.write(line)
        if report.failed and not report.measured:
            raise CommandError(f"no exposure could be measured ({report.failed} failed)")

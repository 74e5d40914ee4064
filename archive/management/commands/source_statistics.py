from django.core.management.base import BaseCommand, CommandError

from archive.services.ingest import measure_missing_statistics

from .ingest import add_imaging_arguments, imaging_options


class Command(BaseCommand):
    help = ("Measure the source statistics (desom.baseline.STATISTIC_NAMES) of the science exposures "
            "ingested before the archive stored them (or before it measured the coherent pair), re-reading "
            "their files; DESOM-2 trained with statistics needs them. Failures are listed and the rest go on; "
            "rerun to resume.")

    def add_arguments(self, parser):
        add_imaging_arguments(parser, detector_help="the detector the exposures were ingested with")

    def handle(self, *args, **opts):
        config = imaging_options(opts)
        report = measure_missing_statistics(workers=opts["workers"], scheduler=opts["scheduler"],
                                            batch_size=opts["batch_size"], imaging_config=config,
                                            progress=opts["verbosity"] > 0)
        for line in report.lines():
            self.stdout.write(line)
        if report.failed and not report.measured:
            raise CommandError(f"no exposure could be measured ({report.failed} failed)")

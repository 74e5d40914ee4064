"""Compute footprints from the files' WCS for exposures that lack one (rows ingested before
footprints existed carry MegaCam's nominal field about their pointing)."""
from django.core.management.base import BaseCommand
from tqdm import tqdm

from archive import geometry
from archive.models import Exposure
from desom.fits_io import ExposureReadError, open_exposure
from desom.footprint import read_footprint


class Command(BaseCommand):
    help = "Read each exposure's CCD headers and store its footprint, CCD outlines and index cells."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="recompute every exposure, not only those without a WCS footprint")

    def handle(self, *args, **options):
        exposures = Exposure.objects.all() if options["all"] else Exposure.objects.exclude(footprint_kind="wcs")
        counts = {"wcs": 0, "nominal": 0, "none": 0, "unreadable": 0}
        for exposure in tqdm(list(exposures.order_by("pk")), desc="footprints", unit="exp"):
            try:
                with open_exposure(exposure.file_path) as reader:
                    found = read_footprint(reader)
            except ExposureReadError as exc:
                counts["unreadable"] += 1
                self.stderr.write(f"{exposure.expnum}: {exc}")
                found = None
            geometry.store_footprint(exposure, found)
            counts[exposure.footprint_kind or "none"] += 1
        self.stdout.write("footprints: " + ", ".join(f"{k} {v}" for k, v in counts.items()))

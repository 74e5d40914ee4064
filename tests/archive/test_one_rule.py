"""Rules the library and the archive share are written once: the exposure number in a file
name, the pointing's unit vector and the text columns' lengths. Each test puts the callers side
by side on inputs where a second copy of the rule would be likely to differ."""
import types

import numpy as np
import pytest
from astropy.io import fits

from archive.models import Exposure, sky_unit_vector
from archive.services import ingest
from desom import footprint
from desom.fits_io import expnum_from_filename, metadata_from_headers

NAMES = ["1038843o.fits.fz", "2045678p.fits", "1038843o", "12345.fits", "survey_2023-05-01.fits",
         "flat_0042.fits", "exposure.fits", "1234567890.fits", "99.fits", "", None]


@pytest.mark.parametrize("name", NAMES)
def test_reading_and_ingest_take_the_same_number_from_a_name(name):
    path = f"/data/{name}" if name else "/data/unnamed.fits"
    read = metadata_from_headers(fits.Header(), path=path)
    assert ingest.exposure_number(read, path) == read.expnum == expnum_from_filename(name)
    # Ingest also looks at the path when the metadata carries no file name.
    bare = types.SimpleNamespace(expnum=None, filename=None)
    assert ingest.exposure_number(bare, path) == expnum_from_filename(name)


def test_only_megacam_names_give_a_number():
    assert expnum_from_filename("1038843o.fits.fz") == 1038843
    assert expnum_from_filename("survey_2023-05-01.fits") is None  # a date is not an odometer
    assert expnum_from_filename(None, "exposure.fits", "2045678p") == 2045678


@pytest.mark.django_db
def test_stored_unit_vector_is_the_geometry_librarys():
    rng = np.random.default_rng(3)
    for ra, dec in zip(rng.uniform(0, 360, 20), rng.uniform(-90, 90, 20)):
        exposure = Exposure.objects.create(expnum=int(rng.integers(1e6, 9e6)), file_path=f"/x/{ra}", checksum="0",
                                           ra_deg=float(ra), dec_deg=float(dec))
        stored = np.array([exposure.sky_x, exposure.sky_y, exposure.sky_z])
        np.testing.assert_allclose(stored, footprint.unit(ra, dec), atol=1e-12)
    assert sky_unit_vector(None, 10.0) == (None, None, None)


def test_ingest_cuts_header_text_to_the_models_column_lengths():
    long_text = "X" * 2000
    metadata = types.SimpleNamespace(filename=long_text, obstype=long_text, layout=long_text, object=long_text,
                                     filter_name=long_text, band=long_text, instrument=long_text, runid=long_text,
                                     ra_deg=None, dec_deg=None, mjd_obs=55000.0, date_obs=None, exptime=1.0,
                                     airmass=None, n_ccds=1, release_date=None)
    long_path = "/data/" + "d" * 1500 + "/1038843o.fits"
    summary = types.SimpleNamespace(metadata=metadata, path=long_path, file_size=1, checksum="c" * 64,
                                    is_science=True, n_detected=3, n_sampled=3, warnings=[], timings={})
    fields = ingest.exposure_fields(summary)
    clipped = [name for name, value in fields.items() if isinstance(value, str) and value.startswith("X")]
    assert len(clipped) == 8
    for name in clipped:
        assert len(fields[name]) == Exposure._meta.get_field(name).max_length
    assert fields["file_path"] == long_path  # a path is never cut: it would name another file

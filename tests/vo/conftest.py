"""Fixtures the VO tests share."""
import datetime as dt

import numpy as np
import pytest

from archive import geometry
from archive.models import Exposure


@pytest.fixture
def sky(db):
    """Exposures with footprints (nominal MegaCam fields) in one patch of sky, one proprietary."""
    rng = np.random.default_rng(3)
    made = []
    for i in range(40):
        ra, dec = float(30 + rng.normal(0, 1.5)), float(-5 + rng.normal(0, 1.5))
        e = Exposure.objects.create(expnum=3_000_000 + i, file_path=f"/nowhere/{i}.fits", checksum=str(i), ra_deg=ra,
                                    dec_deg=dec, band="r", mjd_obs=55000 + i, exptime=300.0, runid="10AQ01",
                                    release_date=dt.date(2001, 1, 1), object_name=f"F{i}")
        geometry.store_footprint(e, None)
        made.append(e)
    secret = made[7]
    Exposure.objects.filter(pk=secret.pk).update(release_date=dt.date.today() + dt.timedelta(days=300), runid="27BQ09")
    return made, secret

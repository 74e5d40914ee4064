"""Archive rows without a trained model: exposures, DESOM-2 versions, cell assignments, labels,
vectors and users, for tests that only need rows. Each helper fills the fields a test does not
care about with unique, valid values; what a test does care about it passes by keyword."""
from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
from django.contrib.auth import get_user_model

from archive import vectors
from archive.models import CellAssignment, CellLabel, Exposure, ExposureVector, ModelVersion
from archive.services import versions

_numbers = itertools.count(9_000_001)
PAST = dt.date(2000, 1, 1)
PROPRIETARY_RUN = "26BQ99"          # the run of the `secret_archive` fixture's exposure
PASSWORD = "a long enough password"


def exposure(**fields) -> Exposure:
    """A public science exposure with a unique number and file path."""
    expnum = fields.pop("expnum", next(_numbers))
    defaults = dict(filename=f"{expnum}p.fits.fz", file_path=f"/factory/{expnum}p.fits.fz",
                    checksum="0" * 64, release_date=PAST, ra_deg=150.0, dec_deg=2.0, band="r",
                    mjd_obs=55000.0, exptime=300.0, runid="11AQ01")
    return Exposure.objects.create(expnum=expnum, **(defaults | fields))


def model_version(kind: str = ModelVersion.DESOM2, *, rows: int = 4, cols: int = 4, active: bool = True,
                  trained_on: ModelVersion | None = None) -> ModelVersion:
    """A model version row with a map shape and no checkpoint behind it."""
    return ModelVersion.objects.create(version_id=f"{kind}-factory-{next(_numbers)}", kind=kind,
                                       checkpoint_path="/factory/none.pt", is_active=active, trained_on=trained_on,
                                       config={"map_rows": rows, "map_cols": cols})


def assign(exposure_row: Exposure, cell: int, desom2: ModelVersion, latent=None) -> CellAssignment:
    """A cell assignment as assign_cells writes it: under the active DESOM-2 it is also copied
    onto the exposure (Exposure.desom2_cell). `latent`: the exposure's DESOM-2 latent code."""
    row = CellAssignment.objects.create(exposure=exposure_row, model_version=desom2, cell=cell,
                                        latent=None if latent is None else vectors.to_blob(latent))
    if desom2.is_active:
        versions.copy_active_cells(desom2, first_id=exposure_row.pk, last_id=exposure_row.pk)
        exposure_row.desom2_cell = cell
    return row


def label(cell: int, text: str, desom2: ModelVersion) -> CellLabel:
    return CellLabel.objects.create(model_version=desom2, cell=cell, label=text)


def vector(exposure_row: Exposure, desom1: ModelVersion, histo) -> ExposureVector:
    histo = np.asarray(histo, dtype=np.float32)
    return ExposureVector.objects.create(exposure=exposure_row, model_version=desom1,
                                         histo=vectors.to_blob(histo), n_detected=int(round(float(histo.sum()))))


def user(username: str | None = None, *, staff: bool = False, password: str = "pw-for-tests"):
    username = username or f"user{next(_numbers)}"
    return get_user_model().objects.create_user(username, password=password, is_staff=staff)

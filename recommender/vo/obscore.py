"""The ObsCore 1.1 description of an exposure: the columns (every mandatory one, then this
archive's content columns) and one row's values. SIA answers with these rows, TAP's
`ivoa.obscore` has these columns, TAP_SCHEMA and VOSI tables describe them from this list."""
from __future__ import annotations

import math

from django.conf import settings

from archive.models import Exposure
from desom import footprint as fp

from .votable import Column

FACILITY = "CFHT"
COLLECTION = "DESOM"
ACCESS_FORMAT = "application/fits"
DATAPRODUCT_TYPE = "image"
# MegaCam's field of view is about 0.96 x 0.94 deg: what an exposure without a WCS is taken to cover.
NOMINAL_FOV_DEG = 0.96

# MegaPrime filter bandpasses (wavelengths where the transmission crosses 50%, in metres; the
# z band's red edge is set by the CCDs' quantum efficiency). Approximate: CFHT's published
# curves differ slightly between the MP93xx/MP94xx generations of filters.
MEGAPRIME_BANDS_M = {
    "u": (3.37e-7, 4.11e-7),
    "g": (4.14e-7, 5.59e-7),
    "r": (5.63e-7, 6.85e-7),
    "i": (6.90e-7, 8.19e-7),
    "z": (8.23e-7, 1.00e-6),
}
CALIB_BY_LAYOUT = {"processed": 2}  # anything else is a raw exposure in the instrument's format: level 1

_O = "obscore:"
COLUMNS = [
    Column("dataproduct_type", "char", None, "meta.code.class", _O + "ObsDataset.dataProductType",
           "data product type (image)", principal=True, std=True),
    Column("calib_level", "short", None, "meta.code;obs.calib", _O + "ObsDataset.calibLevel",
           "1 raw exposure in the instrument's format, 2 processed", principal=True, std=True),
    Column("obs_collection", "char", None, "meta.id", _O + "DataID.Collection", "collection", principal=True, std=True),
    Column("obs_id", "char", None, "meta.id", _O + "DataID.observationID", "exposure number (odometer)",
           principal=True, indexed=True, std=True),
    Column("obs_publisher_did", "char", None, "meta.ref.ivoid", _O + "Curation.PublisherDID",
           "publisher's identifier of the exposure (the DataLink and SODA ID)", principal=True, indexed=True, std=True),
    Column("access_url", "char", None, "meta.ref.url", _O + "Access.Reference", "URL of the FITS file",
           principal=True, std=True),
    Column("access_format", "char", None, "meta.code.mime", _O + "Access.Format", "MIME type of the file",
           std=True),
    Column("access_estsize", "long", "kbyte", "phys.size;meta.file", _O + "Access.Size", "file size", std=True),
    Column("target_name", "char", None, "meta.id;src", _O + "Target.Name", "OBJECT keyword", principal=True, std=True),
    Column("s_ra", "double", "deg", "pos.eq.ra", _O + "Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C1",
           "pointing right ascension (ICRS)", principal=True, indexed=True, std=True),
    Column("s_dec", "double", "deg", "pos.eq.dec", _O + "Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C2",
           "pointing declination (ICRS)", principal=True, indexed=True, std=True),
    Column("s_fov", "double", "deg", "phys.angSize;instr.fov", _O + "Char.SpatialAxis.Coverage.Bounds.Extent.diameter",
           "diameter of the circle about the footprint's centre that holds it", principal=True, std=True),
    Column("s_region", "double", "deg", "pos.outline;obs.field", _O + "Char.SpatialAxis.Coverage.Support.Area",
           "footprint: outline of the CCDs from their WCS (DALI polygon, ICRS)", xtype="polygon", arraysize="*",
           principal=True, indexed=True, std=True),
    Column("s_resolution", "double", "arcsec", "pos.angResolution", _O + "Char.SpatialAxis.Resolution.Refval.value",
           "pixel scale from the WCS (the seeing is not measured)", principal=True, std=True),
    Column("s_xel1", "long", None, "meta.number", _O + "Char.SpatialAxis.numBins1",
           "extent of the mosaic in pixels along the first axis, gaps included", std=True),
    Column("s_xel2", "long", None, "meta.number", _O + "Char.SpatialAxis.numBins2",
           "extent of the mosaic in pixels along the second axis, gaps included", std=True),
    Column("t_min", "double", "d", "time.start;obs.exposure", _O + "Char.TimeAxis.Coverage.Bounds.Limits.StartTime",
           "start (MJD)", principal=True, indexed=True, std=True),
    Column("t_max", "double", "d", "time.end;obs.exposure", _O + "Char.TimeAxis.Coverage.Bounds.Limits.StopTime",
           "end (MJD)", principal=True, std=True),
    Column("t_exptime", "double", "s", "time.duration;obs.exposure", _O + "Char.TimeAxis.Coverage.Support.Extent",
           "exposure time", principal=True, std=True),
    Column("t_resolution", "double", "s", "time.resolution", _O + "Char.TimeAxis.Resolution.Refval.value",
           "time resolution (the exposure)", std=True),
    Column("t_xel", "long", None, "meta.number", _O + "Char.TimeAxis.numBins", "one time sample", std=True),
    Column("em_min", "double", "m", "em.wl;stat.min", _O + "Char.SpectralAxis.Coverage.Bounds.Limits.LoLimit",
           "blue edge of the filter", principal=True, std=True),
    Column("em_max", "double", "m", "em.wl;stat.max", _O + "Char.SpectralAxis.Coverage.Bounds.Limits.HiLimit",
           "red edge of the filter", principal=True, std=True),
    Column("em_res_power", "double", None, "spect.resolution", _O + "Char.SpectralAxis.Resolution.ResolPower.refVal",
           "central wavelength over bandwidth", std=True),
    Column("em_xel", "long", None, "meta.number", _O + "Char.SpectralAxis.numBins", "one spectral sample", std=True),
    Column("o_ucd", "char", None, "meta.ucd", _O + "Char.ObservableAxis.ucd", "what the pixels measure", std=True),
    Column("pol_states", "char", None, "meta.code;phys.polarization", _O + "Char.PolarizationAxis.stateList",
           "polarisation states (none)", std=True),
    Column("pol_xel", "long", None, "meta.number", _O + "Char.PolarizationAxis.numBins",
           "polarisation samples (none: null)", std=True),
    Column("facility_name", "char", None, "meta.id;instr.tel", _O + "Provenance.ObsConfig.Facility.name", "telescope",
           principal=True, std=True),
    Column("instrument_name", "char", None, "meta.id;instr", _O + "Provenance.ObsConfig.Instrument.name", "instrument",
           principal=True, std=True),
    Column("desom2_cell", "int", None, "meta.code", None, "DESOM-2 cell under the active model", principal=True),
    Column("quality_label", "char", None, "meta.code.qual", None,
           "quality label (the cell's expert label, or the guess from neighbouring labelled cells)", principal=True),
    Column("quality_flags", "char", None, "meta.code.qual", None,
           "prototype flags the exposure carries, comma-separated", principal=True),
    Column("label_probability", "double", None, "stat.probability", None,
           "probability of the quality label from the labelled cells around the exposure's cell"),
]
COLUMN_NAMES = [c.name for c in COLUMNS]


def publisher_did_prefix() -> str:
    authority = getattr(settings, "VO_AUTHORITY", "desom.archive")
    return f"ivo://{authority}/exposures?"


def publisher_did(exposure: Exposure) -> str:
    return f"{publisher_did_prefix()}{exposure.expnum}"


def expnum_from_id(text: str) -> int | None:
    """The exposure number named by an obs_publisher_did, an obs_id, or None."""
    text = (text or "").strip()
    prefix = publisher_did_prefix()
    if text.lower().startswith(prefix.lower()):
        text = text[len(prefix):]
    return int(text) if text.isdigit() and len(text) <= 18 else None


def label_probability(verdict) -> float | None:
    if not verdict.label:
        return None
    found = verdict.probabilities.get(verdict.label)
    if found is None and verdict.label_source == "cell label":
        return 1.0
    return found


def row(exposure: Exposure, verdict, download_url: str) -> dict:
    """One ObsCore row (values by column name; None is null)."""
    band = MEGAPRIME_BANDS_M.get((exposure.band or "").lower())
    t_max = None
    if exposure.mjd_obs is not None:
        t_max = exposure.mjd_obs + (exposure.exptime or 0.0) / 86400.0
    region = fp.from_dali(exposure.s_region)
    return {
        "dataproduct_type": DATAPRODUCT_TYPE,
        "calib_level": CALIB_BY_LAYOUT.get(exposure.layout, 1),
        "obs_collection": COLLECTION,
        "obs_id": str(exposure.expnum),
        "obs_publisher_did": publisher_did(exposure),
        "access_url": download_url,
        "access_format": ACCESS_FORMAT,
        "access_estsize": int(math.ceil((exposure.file_size or 0) / 1024)),
        "target_name": exposure.object_name or None,
        "s_ra": exposure.ra_deg,
        "s_dec": exposure.dec_deg,
        "s_fov": exposure.s_fov,
        "s_region": [v for vertex in region for v in vertex] if region else None,
        "s_resolution": exposure.s_resolution,
        "s_xel1": exposure.s_xel1,
        "s_xel2": exposure.s_xel2,
        "t_min": exposure.mjd_obs,
        "t_max": t_max,
        "t_exptime": exposure.exptime,
        "t_resolution": exposure.exptime,
        "t_xel": 1,
        "em_min": band[0] if band else None,
        "em_max": band[1] if band else None,
        "em_res_power": (band[0] + band[1]) / 2 / (band[1] - band[0]) if band else None,
        "em_xel": 1,
        "o_ucd": "phot.count",
        "pol_states": None,
        "pol_xel": None,
        "facility_name": FACILITY,
        "instrument_name": exposure.instrument or None,
        "desom2_cell": verdict.cell,
        "quality_label": verdict.label,
        "quality_flags": ",".join(flag["name"] for flag in verdict.flags) or None,
        "label_probability": label_probability(verdict),
    }

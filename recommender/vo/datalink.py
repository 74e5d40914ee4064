"""DataLink {links} for the archive's exposures: for each ID, the file, its preview, a SODA
cutout service (and one link per CCD, its whole trimmed science area), the exposures most like
it (a service descriptor on SIA's SIMILAR_TO) and its quality verdict. An ID the user may not
see is answered exactly like one that does not exist (NotFoundFault)."""
from __future__ import annotations

from dataclasses import dataclass

from astropy.io.votable.tree import Info, Resource

from desom.errors import UserError

from archive import selectors
from archive.models import Exposure
from archive.services import quality

from . import obscore
from .votable import (NOT_FOUND, Column, ServiceParam, add_table, fault, new_votable, serialise,
                      service_descriptor, status_info)

DATALINK_STANDARD_ID = "ivo://ivoa.net/std/DataLink#links-1.1"
SODA_STANDARD_ID = "ivo://ivoa.net/std/SODA#sync-1.0"
MAX_IDS = 100

COLUMNS = [
    Column("ID", "char", None, "meta.id;meta.main", None, "the dataset this link belongs to"),
    Column("access_url", "char", None, "meta.ref.url", None, "URL of the linked resource"),
    Column("service_def", "char", None, "meta.ref", None, "service descriptor to call instead of a URL"),
    Column("error_message", "char", None, "meta.code.error", None, "why the ID has no links"),
    Column("semantics", "char", None, "meta.code", None, "what the link is (IVOA DataLink vocabulary)"),
    Column("description", "char", None, "meta.note", None, "what the link is, for a person"),
    Column("content_type", "char", None, "meta.code.mime", None, "MIME type of the linked resource"),
    Column("content_length", "long", "byte", "phys.size;meta.file", None, "size (bytes)"),
    Column("content_qualifier", "char", None, "meta.code.class", None, "kind of product"),
    Column("local_semantics", "char", None, "meta.code", None, "this archive's name for the link"),
    Column("link_auth", "char", None, "meta.code", None, "whether the link needs credentials"),
    Column("link_authorized", "boolean", None, "meta.code", None, "whether this caller may follow it"),
]


class DataLinkError(UserError):
    """A links request the service cannot answer as asked."""


@dataclass
class Urls:
    """Absolute URLs of the other routes, from the view (no request in services)."""
    download: callable
    preview: callable
    quality: callable
    soda: str
    sia: str


def collect_ids(params: dict[str, list[str]]) -> list[str]:
    ids = [v.strip() for v in params.get("ID", []) if v.strip()]
    if not ids:
        raise DataLinkError("ID: give at least one dataset identifier (obs_publisher_did)")
    if len(ids) > MAX_IDS:
        raise DataLinkError(f"ID: at most {MAX_IDS} identifiers per request")
    return ids


def _resolve(ids: list[str], user) -> dict[str, Exposure | None]:
    numbers = {i: obscore.expnum_from_id(i) for i in ids}
    wanted = [n for n in numbers.values() if n is not None]
    visible = selectors.visible_exposures(user, Exposure.objects.filter(is_science=True, expnum__in=wanted))
    by_number = {e.expnum: e for e in visible.prefetch_related("ccd_footprints")}
    return {i: by_number.get(n) for i, n in numbers.items()}


def _auth(exposure: Exposure) -> str:
    return "false" if exposure.is_public else "true"


def exposure_links(identifier: str, exposure: Exposure, verdict, urls: Urls) -> list[dict]:
    auth, allowed = _auth(exposure), True
    common = {"ID": identifier, "link_auth": auth, "link_authorized": allowed}
    rows = [
        {**common, "access_url": urls.download(exposure), "semantics": "#this", "content_type": "application/fits",
         "content_length": exposure.file_size or None, "content_qualifier": "image", "local_semantics": "file",
         "description": f"the exposure's FITS file ({exposure.layout or 'unknown'} layout, {exposure.n_ccds} CCDs)"},
        {**common, "access_url": urls.preview(exposure), "semantics": "#preview", "content_type": "image/png",
         "local_semantics": "preview", "description": "preview image of the mosaic"},
    ]
    if exposure.footprint_kind == "wcs":
        rows.append({**common, "service_def": "soda", "semantics": "#cutout", "content_type": "application/fits",
                     "local_semantics": "cutout", "description": "cut a region (CIRCLE, POLYGON or POS) out of "
                     "the exposure's CCDs, overscan trimmed, with a WCS (SODA)"})
        for ccd in exposure.ccd_footprints.all():
            rows.append({**common, "access_url": f"{urls.soda}?ID={obscore.publisher_did(exposure)}&CCD={ccd.extname}",
                         "semantics": "#cutout", "content_type": "application/fits",
                         "content_length": ccd.nx * ccd.ny * 4 + 2880 * 3, "local_semantics": f"ccd {ccd.extname}",
                         "description": f"CCD {ccd.extname}: its {ccd.nx} x {ccd.ny} science area with its WCS"})
    rows.append({**common, "service_def": "similar", "semantics": "#auxiliary", "local_semantics": "similar",
                 "content_type": "application/x-votable+xml",
                 "description": "the exposures most like this one by content (SIA 2.0 SIMILAR_TO)"})
    label = verdict.label or "unlabelled"
    flags = ", ".join(f["name"] for f in verdict.flags) or "none"
    rows.append({**common, "access_url": urls.quality(exposure), "semantics": "#auxiliary",
                 "local_semantics": "quality", "content_type": "application/json",
                 "description": f"quality verdict: {label} ({verdict.label_source}, DESOM-2 cell "
                                f"{'-' if verdict.cell is None else verdict.cell}); flags: {flags}"})
    return rows


def links_votable(ids: list[str], user, urls: Urls) -> bytes:
    found = _resolve(ids, user)
    exposures = [e for e in found.values() if e is not None]
    verdicts = {v.exposure_id: v for v in quality.quality_verdicts(exposures)}
    rows = []
    for identifier in ids:
        exposure = found[identifier]
        if exposure is None:
            # DataLink 1.1: an ID without links gets one row, #this, with its fault.
            rows.append({"ID": identifier, "semantics": "#this",
                         "error_message": fault(NOT_FOUND, f"no exposure {identifier!r} in this archive")})
        else:
            rows.extend(exposure_links(identifier, exposure, verdicts[exposure.pk], urls))
    votable = new_votable()
    resource = Resource(type="results")
    votable.resources.append(resource)
    resource.infos.append(status_info("OK"))
    resource.infos.append(Info(name="standardID", value=DATALINK_STANDARD_ID))
    add_table(votable, resource, COLUMNS, rows)
    votable.resources.append(service_descriptor(votable, "soda", SODA_STANDARD_ID, urls.soda, SODA_PARAMETERS,
                                                "cutouts of the exposure (SODA sync)"))
    votable.resources.append(service_descriptor(
        votable, "similar", "ivo://ivoa.net/std/SIA#query-2.0", urls.sia,
        [ServiceParam("SIMILAR_TO", ref="ID", description="the exposure to compare with"),
         ServiceParam("K", "int", "how many similar exposures", value="10")],
        "the exposures most like this one (SIA 2.0 with this archive's SIMILAR_TO)"))
    return serialise(votable)


def error_votable(message: str, code: str = "UsageFault") -> bytes:
    """A links request refused as a whole (no ID, too many): DALI's error status over an empty
    links table, so a DataLink client reads it as the DataLink document it asked for."""
    votable = new_votable()
    resource = Resource(type="results")
    votable.resources.append(resource)
    resource.infos.append(status_info("ERROR", fault(code, message)))
    add_table(votable, resource, COLUMNS, [])
    return serialise(votable)


SODA_PARAMETERS = [
    ServiceParam("ID", ref="ID", description="the exposure (obs_publisher_did)"),
    ServiceParam("CIRCLE", "double", "circle to cut out: ra dec radius (deg, ICRS)", unit="deg", xtype="circle",
                 arraysize="3"),
    ServiceParam("POLYGON", "double", "polygon to cut out: ra dec pairs (deg, ICRS)", unit="deg", xtype="polygon",
                 arraysize="*"),
    ServiceParam("POS", description="region to cut out: CIRCLE ra dec r | RANGE ra1 ra2 dec1 dec2 | POLYGON ..."),
    ServiceParam("CCD", description="only these CCDs (EXTNAME, or position from 0); repeat for several"),
]

"""Tables of exposures for scripts and VO tools: `?format=csv` or `?format=votable` on the
exposure list (a page of it, as in JSON) and the manifest. One row per exposure, its columns
flat: the metadata, its quality (label, cell, flags, whether it is fit to download), the
footprint as a DALI polygon (ra dec ra dec ... in degrees) and the download URL. An error
stays the API's JSON error."""
from __future__ import annotations

import csv
import io
import json

from rest_framework.renderers import BaseRenderer

COLUMNS = ["id", "expnum", "filename", "obstype", "is_science", "object_name", "ra_deg", "dec_deg", "mjd_obs",
           "date_obs", "exptime", "band", "airmass", "instrument", "n_ccds", "runid", "status", "release_date",
           "is_public", "quality_label", "quality_cell", "quality_flags", "quality_ok", "footprint", "download_url"]
# VOTable datatypes of the columns that are not text.
_DATATYPES = {"id": "long", "expnum": "long", "is_science": "boolean", "ra_deg": "double", "dec_deg": "double",
              "mjd_obs": "double", "exptime": "double", "airmass": "double", "n_ccds": "int", "is_public": "boolean",
              "quality_cell": "int", "quality_ok": "boolean"}
_UNITS = {"ra_deg": "deg", "dec_deg": "deg", "mjd_obs": "d", "exptime": "s"}


def flat_row(row: dict) -> dict:
    quality = row.get("quality") or {}
    footprint = row.get("footprint") or {}
    polygon = footprint.get("polygon") or []
    flat = {name: row.get(name) for name in COLUMNS[:19]}
    flat.update({
        "quality_label": quality.get("label"),
        "quality_cell": quality.get("cell"),
        "quality_flags": ",".join(f["name"] for f in quality.get("flags", [])) or None,
        "quality_ok": quality.get("ok"),
        "footprint": " ".join(repr(float(v)) for vertex in polygon for v in vertex) or None,
        "download_url": (row.get("links") or {}).get("download") or row.get("url"),
    })
    return flat


def _rows(data) -> list[dict] | None:
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        return data["results"]
    if isinstance(data, list):
        return data
    return None


def _json_instead(data, renderer_context) -> bytes:
    response = (renderer_context or {}).get("response")
    if response is not None:
        response["Content-Type"] = "application/json"
    return json.dumps(data).encode()


def csv_table(rows: list[dict], columns: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return out.getvalue().encode()


def votable_table(rows: list[dict], columns: list[str], description: str) -> bytes:
    from astropy.io.votable.tree import Field, Info, Resource, TableElement, VOTableFile

    votable = VOTableFile(version="1.4")
    resource = Resource(type="results")
    votable.resources.append(resource)
    resource.infos.append(Info(name="QUERY_STATUS", value="OK"))
    table = TableElement(votable, name="exposures")
    table.description = description
    resource.tables.append(table)
    for name in columns:
        datatype = _DATATYPES.get(name, "char")
        table.fields.append(Field(votable, name=name, ID=name, datatype=datatype, unit=_UNITS.get(name),
                                  arraysize="*" if datatype == "char" else None))
    table.create_arrays(len(rows))
    for i, row in enumerate(rows):
        values, mask = [], []
        for name in columns:
            value, datatype = row.get(name), _DATATYPES.get(name, "char")
            missing = value is None
            mask.append(missing)
            if missing:
                value = "" if datatype == "char" else (False if datatype == "boolean" else 0)
            values.append(str(value) if datatype == "char" else value)
        table.array[i] = tuple(values)
        table.array.mask[i] = tuple(mask)
    out = io.BytesIO()
    votable.to_xml(out)
    return out.getvalue()


class ExposureCSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        rows = _rows(data)
        if rows is None:
            return _json_instead(data, renderer_context)
        return csv_table([flat_row(r) for r in rows], COLUMNS)


class ExposureVOTableRenderer(BaseRenderer):
    media_type = "application/x-votable+xml"
    format = "votable"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        rows = _rows(data)
        if rows is None:
            return _json_instead(data, renderer_context)
        return votable_table([flat_row(r) for r in rows], COLUMNS, "exposures of the archive (one page)")

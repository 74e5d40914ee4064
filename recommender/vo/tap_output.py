"""TAP's output formats (RESPONSEFORMAT, or FORMAT): VOTable with TABLEDATA or BINARY2
serialisation, CSV, TSV and FITS. One result, as `tap.run_sync` gives it, written in the format
asked for, for sync answers and async results alike."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from desom.errors import UserError

from .votable import VOTABLE_MIME


@dataclass(frozen=True)
class OutputFormat:
    name: str            # the short alias (TAPRegExt outputFormat alias)
    mime: str            # Content-Type of the answer
    extension: str       # of a stored async result
    aliases: tuple[str, ...]


FORMATS = [
    OutputFormat("votable", f"{VOTABLE_MIME}", "xml",
                 ("votable", "votable/td", "application/x-votable+xml", "text/xml", "application/xml",
                  "application/x-votable+xml;serialization=tabledata", "votable/tabledata")),
    OutputFormat("votable/b2", f"{VOTABLE_MIME};serialization=BINARY2", "vot",
                 ("votable/b2", "binary2", "votable/binary2", "application/x-votable+xml;serialization=binary2")),
    OutputFormat("csv", "text/csv;header=present", "csv", ("csv", "text/csv", "text/csv;header=present")),
    OutputFormat("tsv", "text/tab-separated-values", "tsv", ("tsv", "text/tab-separated-values")),
    OutputFormat("fits", "application/fits", "fits", ("fits", "application/fits", "image/fits")),
]
_BY_ALIAS = {alias: f for f in FORMATS for alias in f.aliases}


class FormatError(UserError):
    code, status = "UsageFault", 400


def _normalise(value: str) -> str:
    return "".join(value.split()).lower()


def choose(params) -> OutputFormat:
    """The format named by RESPONSEFORMAT (or its older name FORMAT), VOTable by default."""
    for name in ("RESPONSEFORMAT", "FORMAT"):
        values = params.get(name, [])
        if len(values) > 1:
            raise FormatError(f"{name}: give one value, not {len(values)}")
        if values:
            found = _BY_ALIAS.get(_normalise(values[0]))
            if found is None:
                offered = ", ".join(f.name for f in FORMATS)
                raise FormatError(f"{name}: {values[0]!r} is not offered; choose one of {offered} "
                                  "(or their MIME types)")
            return found
    return FORMATS[0]


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(repr(float(v)) for v in value)    # a DALI array, as in a VOTable cell
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _delimited(result, delimiter: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n" if delimiter == "," else "\n")
    writer.writerow([c.name for c in result.columns])
    for row in result.rows:
        cells = [_text(row.get(c.name)) for c in result.columns]
        if delimiter == "\t":  # TSV has no quoting: a tab or line break in a value becomes a space
            cells = [" ".join(cell.split("\t")).replace("\n", " ").replace("\r", " ") for cell in cells]
        writer.writerow(cells)
    return out.getvalue().encode()


def _fits(result) -> bytes:
    from astropy.io import fits
    from astropy.io.votable.tree import Resource

    from .votable import add_table, new_votable

    votable = new_votable()
    resource = Resource(type="results")
    votable.resources.append(resource)
    table = add_table(votable, resource, result.columns, result.rows).to_table()
    for name in table.colnames:
        column = table[name]
        if column.dtype == object and all(isinstance(v, str) or v is None or v is np.ma.masked for v in column):
            # FITS has no variable-length strings: the widest value sets the width, a null is blank.
            table[name] = np.array(["" if v is None or v is np.ma.masked else v for v in column], dtype=str)
    hdu = fits.table_to_hdu(table)
    hdu.header["EXTNAME"] = "RESULTS"
    hdu.header["QSTATUS"] = ("OVERFLOW" if result.overflow else "OK", "TAP query status")
    if result.overflow:
        hdu.header["COMMENT"] = f"more than MAXREC={result.maxrec} rows; narrow the query"
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(out)
    return out.getvalue()


def render(result, output: OutputFormat, links_url: str) -> bytes:
    from . import tap

    if output.name == "votable":
        return tap.results_votable(result, links_url)
    if output.name == "votable/b2":
        return tap.results_votable(result, links_url, serialization="binary2")
    if output.name == "csv":
        return _delimited(result, ",")
    if output.name == "tsv":
        return _delimited(result, "\t")
    return _fits(result)

"""TAP_UPLOAD: VOTables sent inline with the query (`UPLOAD=name,param:part` and a multipart
part of that name, as pyvo and TOPCAT send them), bounded before they are parsed: at most
`TAP_UPLOAD_MAX_TABLES` tables, `TAP_UPLOAD_MAX_BYTES` bytes each (refused from the part's size),
`TAP_UPLOAD_MAX_ROWS` rows (counted in the TABLEDATA before parsing, and again after). Each
table becomes `TAP_UPLOAD.name` for that one query: a temporary table inside the query's
read-only transaction (`tap.run_sync`), which the access rule of `ivoa.obscore` still governs.
A table may also be named by an http(s) URL (`UPLOAD=name,https://...`): fetched only from
public addresses, without redirects, within the same byte bound and a timeout."""
from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from desom.errors import UserError

from .votable import Column

DEFAULT_MAX_TABLES = 3
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_ROWS = 20_000
MAX_COLUMNS = 100
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
# VOTable datatypes to PostgreSQL's, and the VOTable datatype the column is published as.
_TYPES = {"boolean": ("boolean", "boolean"), "bit": ("boolean", "boolean"), "unsignedByte": ("smallint", "short"),
          "short": ("smallint", "short"), "int": ("integer", "int"), "long": ("bigint", "long"),
          "float": ("real", "float"), "double": ("double precision", "double"),
          "char": ("text", "char"), "unicodeChar": ("text", "char")}


class UploadError(UserError):
    code, status = "UsageFault", 400


def limits() -> tuple[int, int, int]:
    return (int(getattr(settings, "TAP_UPLOAD_MAX_TABLES", DEFAULT_MAX_TABLES)),
            int(getattr(settings, "TAP_UPLOAD_MAX_BYTES", DEFAULT_MAX_BYTES)),
            int(getattr(settings, "TAP_UPLOAD_MAX_ROWS", DEFAULT_MAX_ROWS)))


@dataclass
class UploadTable:
    name: str                    # as the query names it, TAP_UPLOAD.<name> (lower-case)
    columns: list[Column]
    sql_types: list[str]
    rows: list[tuple]


def parse_upload_parameter(values: list[str]) -> list[tuple[str, str]]:
    """UPLOAD=name,param:part[;name2,param:part2] -> [(name, part)]; each name an ADQL identifier."""
    max_tables, _, _ = limits()
    pairs = []
    for value in values:
        for item in (v for v in value.split(";") if v.strip()):
            name, sep, where = item.partition(",")
            name, where = name.strip(), where.strip()
            if not sep or not where:
                raise UploadError(f"UPLOAD: {item!r} is not 'name,param:part'")
            if not _NAME.match(name):
                raise UploadError(f"UPLOAD: the table name {name!r} must be a letter then letters, digits or _ "
                                  "(at most 64)")
            if where.lower().startswith("param:"):
                pairs.append((name.lower(), where[len("param:"):]))
            elif where.lower().startswith(("http://", "https://")):
                pairs.append((name.lower(), where))
            else:
                raise UploadError(f"UPLOAD: {name}: give param:part (a table sent with the request) or an "
                                  "http(s) URL")
    if len(pairs) > max_tables:
        raise UploadError(f"UPLOAD: at most {max_tables} tables per query")
    if len({n for n, _ in pairs}) != len(pairs):
        raise UploadError("UPLOAD: each table needs a name of its own")
    return pairs


def check_size(name: str, size: int | None) -> None:
    _, max_bytes, _ = limits()
    if size is None or size > max_bytes:
        raise UploadError(f"UPLOAD: table {name} is {size} bytes; at most {max_bytes} are accepted")


def _column_name(text: str, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", text or "col").lower()
    if not re.match(r"[a-z]", name):
        name = "c_" + name
    name = name[:60]
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate)
    return candidate


def _cell(value, datatype: str):
    if value is np.ma.masked or value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if datatype == "char":
        return str(value).replace("\x00", "")
    if datatype == "boolean":
        return bool(value)
    if datatype in ("short", "int", "long"):
        return int(value)
    value = float(value)
    return value if np.isfinite(value) else None


def parse_table(name: str, content: bytes) -> UploadTable:
    """One uploaded VOTable, its first table, bounded in bytes and rows before astropy parses it."""
    from astropy.io.votable import parse

    _, max_bytes, max_rows = limits()
    check_size(name, len(content))
    if content.count(b"<TR") + content.count(b"<tr") > max_rows:
        raise UploadError(f"UPLOAD: table {name} has more than {max_rows} rows; at most {max_rows} are accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            votable = parse(io.BytesIO(content), verify="ignore")
        element = votable.get_first_table()
    except Exception as exc:
        raise UploadError(f"UPLOAD: table {name} is not a readable VOTable ({type(exc).__name__})") from None
    if len(element.array) > max_rows:
        raise UploadError(f"UPLOAD: table {name} has {len(element.array)} rows; at most {max_rows} are accepted")
    if len(element.fields) > MAX_COLUMNS:
        raise UploadError(f"UPLOAD: table {name} has {len(element.fields)} columns; at most {MAX_COLUMNS}")
    columns, sql_types, taken = [], [], set()
    for field in element.fields:
        arraysize = (field.arraysize or "").strip()
        if field.datatype not in _TYPES or (arraysize and field.datatype not in ("char", "unicodeChar")):
            raise UploadError(f"UPLOAD: table {name}: column {field.name!r} is a {field.datatype}"
                              f"{'[' + arraysize + ']' if arraysize else ''}; only scalars and strings can be uploaded")
        sql_type, datatype = _TYPES[field.datatype]
        xtype = None
        if datatype == "char" and (field.xtype or "").lower() == "timestamp":
            sql_type, xtype = "timestamp", "timestamp"     # DALI timestamp: compared as a time in the query
        columns.append(Column(_column_name(field.name, taken), datatype, field.unit and str(field.unit), field.ucd,
                              None, field.description or "", xtype=xtype, arraysize="*" if xtype else None))
        sql_types.append(sql_type)
    array = element.array
    by_position = [array[key] for key in array.dtype.names]
    rows = [tuple(_cell(values[i], c.datatype) for values, c in zip(by_position, columns)) for i in range(len(array))]
    return UploadTable(name, columns, sql_types, rows)


def is_url(where: str) -> bool:
    return where.lower().startswith(("http://", "https://"))


def _public_address(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address.split("%")[0])
    if getattr(settings, "TAP_UPLOAD_FETCH_PRIVATE", False):
        return True
    return ip.is_global and not ip.is_multicast


def fetch(name: str, url: str) -> bytes:
    """A table at a URL (upload-http/https): only to public addresses (checked on the socket
    actually connected, so a name that resolves twice cannot point inside), no redirects, at most
    TAP_UPLOAD_MAX_BYTES read, within TAP_UPLOAD_FETCH_TIMEOUT_S."""
    import http.client
    import urllib.parse

    _, max_bytes, _ = limits()
    timeout = float(getattr(settings, "TAP_UPLOAD_FETCH_TIMEOUT_S", 10))
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UploadError(f"UPLOAD: table {name}: {url!r} is not an http(s) URL")
    import socket

    refused = UploadError(f"UPLOAD: table {name}: this service fetches tables only from public addresses")
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 80, type=socket.SOCK_STREAM)}
    except OSError:
        raise UploadError(f"UPLOAD: table {name}: the host {parts.hostname!r} is unknown") from None
    if not all(_public_address(address) for address in resolved):
        raise refused          # refused before any connection: no probing of the inside
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.connect()
        if not _public_address(connection.sock.getpeername()[0]):
            raise refused      # the name resolved elsewhere the second time
        path = parts.path or "/"
        connection.request("GET", path + (f"?{parts.query}" if parts.query else ""),
                           headers={"Accept": "application/x-votable+xml, text/xml"})
        response = connection.getresponse()
        if response.status != 200:
            raise UploadError(f"UPLOAD: table {name}: {url} answered HTTP {response.status} (redirects are not "
                              "followed)")
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit():
            check_size(name, int(declared))
        content = response.read(max_bytes + 1)
    except OSError as exc:
        raise UploadError(f"UPLOAD: table {name}: {url} could not be read ({type(exc).__name__})") from None
    finally:
        connection.close()
    check_size(name, len(content))
    return content


def from_request(params, files) -> list[UploadTable]:
    """The tables a sync request uploads: UPLOAD names each, its part (or URL) holds it."""
    values = params.get("UPLOAD", [])
    if not values:
        return []
    tables = []
    for name, part in parse_upload_parameter(values):
        if is_url(part):
            tables.append(parse_table(name, fetch(name, part)))
            continue
        uploaded = files.get(part)
        if uploaded is None:
            raise UploadError(f"UPLOAD: table {name} names the part {part!r}, which the request does not carry")
        check_size(name, uploaded.size)
        tables.append(parse_table(name, uploaded.read()))
    return tables

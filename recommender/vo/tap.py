"""ObsTAP: synchronous ADQL queries over `ivoa.obscore` and `TAP_SCHEMA`, on PostgreSQL with
pgSphere.

ADQL is translated to PostgreSQL/pgSphere by queryparser (the translator of the Daiquiri
framework). Safety comes in layers, each enough to refuse what the others miss:

1. the translated query is parsed again; it may name only the published tables (ivoa.obscore
   and TAP_SCHEMA's) and call only ADQL's functions and their pgSphere translations;
2. `ivoa.obscore` exists only inside the request's transaction: a temporary view over the
   internal ObsCore view restricted to the exposures the caller may see, chosen by the
   archive's one access rule (`archive.selectors.visible_exposures`, compiled to SQL);
3. the query runs in a READ ONLY transaction that is rolled back, under a role
   (`desom_tap`) that may read nothing but the published tables, with a statement timeout,
   through a server-side cursor from which at most MAXREC + 1 rows are fetched.

On SQLite, or a PostgreSQL without pgSphere, TAP answers with a VOTable error saying so.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import uuid
from dataclasses import dataclass, replace

from astropy.io.votable.tree import Resource
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max
from xml.sax.saxutils import escape

from desom.errors import UserError

from archive import selectors
from archive.models import CellAssignment, CellLabel, Exposure, ExposureFlag, ModelVersion, PrototypeFlag
from archive.services import quality, versions

from . import obscore, tap_output
from .votable import Column, add_table, new_votable, serialise, status_info

logger = logging.getLogger(__name__)

TAP_STANDARD_ID = "ivo://ivoa.net/std/TAP"
TAP_ROLE = "desom_tap"
INTERNAL_SCHEMA = "tap_internal"
DEFAULT_MAXREC = 1000
MAX_MAXREC = 100_000
DEFAULT_TIMEOUT_S = 10.0
MAX_QUERY_LENGTH = 20_000
PUBLISHED = {("ivoa", "obscore"), ("tap_schema", "schemas"), ("tap_schema", "tables"), ("tap_schema", "columns"),
             ("tap_schema", "keys"), ("tap_schema", "key_columns")}
# ADQL's functions, as queryparser writes them in PostgreSQL, and the pgSphere calls its
# geometry becomes. Anything else (pg_sleep, current_setting, lo_import ...) is refused.
ALLOWED_FUNCTIONS = {
    "abs", "acos", "asin", "atan", "atan2", "ceiling", "ceil", "cos", "cot", "degrees", "exp", "floor", "log",
    "log10", "ln", "mod", "pi", "power", "radians", "sin", "sqrt", "tan", "trunc", "truncate", "round",
    "count", "sum", "avg", "min", "max", "lower", "upper", "coalesce",
    "spoint", "scircle", "spoly", "sbox", "area", "center", "long", "lat", "radius",
}


class TapError(UserError):
    def __init__(self, message: str, code: str = "UsageFault", status: int = 400):
        super().__init__(message)
        self.code, self.status = code, status


def timeout_s() -> float:
    return float(getattr(settings, "TAP_TIMEOUT_S", DEFAULT_TIMEOUT_S))


# --- the published tables -----------------------------------------------------------------------

TAP_SCHEMA_COLUMNS = {
    "schemas": [("schema_name", "char", "schema name"), ("utype", "char", "utype"),
                ("description", "char", "description"), ("schema_index", "int", "order")],
    "tables": [("schema_name", "char", "schema"), ("table_name", "char", "table, schema-qualified"),
               ("table_type", "char", "table or view"), ("utype", "char", "utype"),
               ("description", "char", "description"), ("table_index", "int", "order")],
    "columns": [("table_name", "char", "table, schema-qualified"), ("column_name", "char", "column"),
                ("datatype", "char", "VOTable datatype"), ("arraysize", "char", "VOTable arraysize"),
                ("xtype", "char", "VOTable xtype"), ("size", "int", "length (deprecated)"),
                ("description", "char", "description"), ("utype", "char", "utype"), ("unit", "char", "unit"),
                ("ucd", "char", "UCD"), ("indexed", "int", "1 when indexed"), ("principal", "int", "1 when principal"),
                ("std", "int", "1 when defined by a standard"), ("column_index", "int", "order")],
    "keys": [("key_id", "char", "key"), ("from_table", "char", "from"), ("target_table", "char", "to"),
             ("utype", "char", "utype"), ("description", "char", "description")],
    "key_columns": [("key_id", "char", "key"), ("from_column", "char", "from"), ("target_column", "char", "to")],
}
TABLE_DESCRIPTIONS = {
    "ivoa.obscore": "ObsCore 1.1: one row per science exposure, with its DESOM-2 cell, quality label, "
                    "prototype flags and label probability",
    "tap_schema.schemas": "schemas published here", "tap_schema.tables": "tables published here",
    "tap_schema.columns": "columns of the published tables",
    "tap_schema.keys": "foreign keys between the published tables",
    "tap_schema.key_columns": "columns of the foreign keys",
}
# TAP_SCHEMA's own foreign keys (TAP 1.1 section 4): key id, from table, to table, column pairs.
FOREIGN_KEYS = [
    ("tables_schema", "tap_schema.tables", "tap_schema.schemas", [("schema_name", "schema_name")]),
    ("columns_table", "tap_schema.columns", "tap_schema.tables", [("table_name", "table_name")]),
    ("keys_from", "tap_schema.keys", "tap_schema.tables", [("from_table", "table_name")]),
    ("keys_target", "tap_schema.keys", "tap_schema.tables", [("target_table", "table_name")]),
    ("key_columns_key", "tap_schema.key_columns", "tap_schema.keys", [("key_id", "key_id")]),
]
# ADQL's reserved words among the published column names: TAP_SCHEMA and VOSI name them delimited.
ADQL_RESERVED = {"size", "value", "date", "time", "timestamp", "user", "order", "group", "position", "first",
                 "last", "level", "section", "zone", "region", "point", "circle", "box", "polygon", "area"}
# In TAP the footprint is an ADQL region (xtype adql:REGION, an STC-S POLYGON string, no unit);
# SIA's ObsCore rows keep the DALI polygon (obscore.COLUMNS).
REGION_XTYPE = "adql:REGION"


def adql_name(name: str) -> str:
    """A column name as ADQL must write it: delimited ("size") where it is a reserved word."""
    return f'"{name}"' if name.lower() in ADQL_RESERVED else name


def _tap_column(column: Column) -> Column:
    if column.name == "s_region":
        return replace(column, datatype="char", unit=None, xtype=REGION_XTYPE, arraysize="*")
    return column


def published_columns() -> dict[str, list[Column]]:
    tables = {"ivoa.obscore": [_tap_column(c) for c in obscore.COLUMNS]}
    for name, cols in TAP_SCHEMA_COLUMNS.items():
        tables[f"tap_schema.{name}"] = [Column(c, t, description=d, principal=True, std=True) for c, t, d in cols]
    return tables


def _literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _values_view(name: str, columns, rows) -> str:
    cast = {"char": "text", "int": "integer"}
    names = ", ".join(f'"{c}"' for c, _, _ in columns)
    if not rows:
        nulls = ", ".join(f"NULL::{cast[t]} AS \"{c}\"" for c, t, _ in columns)
        return f"CREATE VIEW tap_schema.{name} AS SELECT {nulls} WHERE false"
    body = ",\n".join("(" + ", ".join(f"{_literal(v)}::{cast[t]}" for v, (_, t, _) in zip(row, columns)) + ")"
                      for row in rows)
    return f"CREATE VIEW tap_schema.{name} AS SELECT * FROM (VALUES\n{body}) AS t({names})"


def tap_schema_sql() -> list[str]:
    tables = published_columns()
    schemas = [("ivoa", None, "IVOA data models (ObsCore)", 0), ("tap_schema", None, "this service's metadata", 1)]
    table_rows = [(t.split(".")[0], t, "view", "ivo://ivoa.net/std/obscore#table-1.1" if t == "ivoa.obscore" else None,
                   TABLE_DESCRIPTIONS[t], i) for i, t in enumerate(tables)]
    column_rows = []
    for table, cols in tables.items():
        for i, c in enumerate(cols):
            column_rows.append((table, adql_name(c.name), c.datatype, c.size, c.xtype, None, c.description, c.utype,
                                c.unit, c.ucd, int(c.indexed), int(c.principal), int(c.std), i))
    keys = [(key, source, target, None, f"{source} refers to {target}") for key, source, target, _ in FOREIGN_KEYS]
    key_columns = [(key, a, b) for key, _, _, pairs in FOREIGN_KEYS for a, b in pairs]
    data = {"schemas": schemas, "tables": table_rows, "columns": column_rows, "keys": keys, "key_columns": key_columns}
    sql = ["DROP SCHEMA IF EXISTS tap_schema CASCADE", "CREATE SCHEMA tap_schema"]
    sql += [_values_view(name, TAP_SCHEMA_COLUMNS[name], rows) for name, rows in data.items()]
    return sql


def _band_case(index: int) -> str:
    whens = " ".join(f"WHEN '{band}' THEN {edges[index]!r}" for band, edges in obscore.MEGAPRIME_BANDS_M.items())
    return f"CASE lower(e.band) {whens} END"


def obscore_view_sql() -> str:
    """The internal view: every science exposure as an ObsCore row (no access rule here: the
    request's temporary view adds it). access_url is built on the request's base URL."""
    prefix = obscore.publisher_did_prefix().replace("'", "''")
    res_power = " ".join(f"WHEN '{b}' THEN {(lo + hi) / 2 / (hi - lo)!r}" for b, (lo, hi) in obscore.MEGAPRIME_BANDS_M.items())
    calib = " ".join(f"WHEN '{layout}' THEN {level}" for layout, level in obscore.CALIB_BY_LAYOUT.items())
    return f"""CREATE VIEW {INTERNAL_SCHEMA}.obscore_all AS SELECT
  e.id AS exposure_id,
  '{obscore.DATAPRODUCT_TYPE}'::text AS dataproduct_type,
  (CASE e.layout {calib} ELSE 1 END)::smallint AS calib_level,
  '{obscore.COLLECTION}'::text AS obs_collection,
  e.expnum::text AS obs_id,
  ('{prefix}' || e.expnum)::text AS obs_publisher_did,
  (current_setting('desom.base_url', true) || '/exposures/' || e.id || '/download/')::text AS access_url,
  '{obscore.ACCESS_FORMAT}'::text AS access_format,
  ceil(e.file_size / 1024.0)::bigint AS access_estsize,
  NULLIF(e.object_name, '')::text AS target_name,
  e.ra_deg AS s_ra, e.dec_deg AS s_dec, e.s_fov AS s_fov,
  desom_spoly(NULLIF(e.s_region, '')) AS s_region,
  e.s_resolution AS s_resolution, e.s_xel1::bigint AS s_xel1, e.s_xel2::bigint AS s_xel2,
  e.mjd_obs AS t_min, e.mjd_obs + coalesce(e.exptime, 0) / 86400.0 AS t_max,
  e.exptime AS t_exptime, e.exptime AS t_resolution, 1::bigint AS t_xel,
  ({_band_case(0)})::double precision AS em_min, ({_band_case(1)})::double precision AS em_max,
  (CASE lower(e.band) {res_power} END)::double precision AS em_res_power, 1::bigint AS em_xel,
  'phot.count'::text AS o_ucd, NULL::text AS pol_states, NULL::bigint AS pol_xel,
  '{obscore.FACILITY}'::text AS facility_name, NULLIF(e.instrument, '')::text AS instrument_name,
  q.desom2_cell AS desom2_cell, q.quality_label::text AS quality_label, q.quality_flags AS quality_flags,
  q.label_probability AS label_probability
FROM archive_exposure e LEFT JOIN recommender_exposurequality q ON q.exposure_id = e.id
WHERE e.is_science"""


SPOLY_FUNCTION = r"""CREATE OR REPLACE FUNCTION desom_spoly(text) RETURNS spoly
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT ('{' || rtrim(regexp_replace(btrim($1), '(\S+)\s+(\S+)(\s+|$)', '(\1d,\2d),', 'g'), ',') || '}')::spoly
$$"""


def install(using_connection=None) -> bool:
    """Create (again) everything TAP reads, on PostgreSQL: pgSphere, the footprint function and
    its indexes, the internal ObsCore view, TAP_SCHEMA, and the reader role. False (and a
    warning) where pgSphere cannot be had."""
    conn = using_connection or connection
    if conn.vendor != "postgresql":
        return False
    with conn.cursor() as cursor:
        try:
            with transaction.atomic(using=conn.alias):
                cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_sphere")
        except Exception as exc:  # not installed on the server, or no right to create it
            logger.warning("TAP disabled: pgSphere is not available (%s)", str(exc).strip().splitlines()[0])
            return False
        with transaction.atomic(using=conn.alias):
            cursor.execute(SPOLY_FUNCTION)
            cursor.execute("CREATE INDEX IF NOT EXISTS archive_exposure_region_spoly ON archive_exposure "
                           "USING gist (desom_spoly(NULLIF(s_region, '')))")
            cursor.execute("CREATE INDEX IF NOT EXISTS archive_exposure_pointing_spoint ON archive_exposure "
                           "USING gist (spoint(radians(ra_deg), radians(dec_deg)))")
            cursor.execute(f"DROP SCHEMA IF EXISTS {INTERNAL_SCHEMA} CASCADE")
            cursor.execute(f"CREATE SCHEMA {INTERNAL_SCHEMA}")
            cursor.execute(obscore_view_sql())
            for statement in tap_schema_sql():
                cursor.execute(statement)
        try:
            with transaction.atomic(using=conn.alias):
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [TAP_ROLE])
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE ROLE {TAP_ROLE} NOLOGIN")
                cursor.execute(f"GRANT {TAP_ROLE} TO CURRENT_USER")
                cursor.execute(f"GRANT USAGE ON SCHEMA tap_schema TO {TAP_ROLE}")
                cursor.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA tap_schema TO {TAP_ROLE}")
        except Exception as exc:
            logger.warning("TAP runs without its reader role (%s): queries still run read-only, "
                           "on the published tables only", str(exc).strip().splitlines()[0])
    return True


def post_migrate(sender, using="default", **kwargs):
    from django.db import connections

    install(connections[using])


def available() -> tuple[bool, str]:
    if connection.vendor != "postgresql":
        return False, ("TAP needs PostgreSQL with pgSphere; this archive runs on "
                       f"{connection.vendor} (set DATABASE_URL to a PostgreSQL database)")
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [f"{INTERNAL_SCHEMA}.obscore_all"])
        if cursor.fetchone()[0] is None:
            return False, "TAP needs the pgSphere extension in the archive's PostgreSQL database (run migrate after installing it)"
    return True, "the TAP service is accepting queries"


def _has_role(cursor) -> bool:
    cursor.execute("SELECT pg_has_role(current_user, %s, 'MEMBER') FROM pg_roles WHERE rolname = %s",
                   [TAP_ROLE, TAP_ROLE])
    found = cursor.fetchone()
    return bool(found and found[0])


# --- quality copy ---------------------------------------------------------------------------------

def _stamp() -> str:
    desom2 = versions.active_version(ModelVersion.DESOM2)
    parts = [desom2.pk if desom2 else None,
             CellLabel.objects.aggregate(n=Count("id"), m=Max("id")),
             ExposureFlag.objects.aggregate(n=Count("id"), m=Max("id"), s=Max("share")),
             PrototypeFlag.objects.aggregate(n=Count("id"), m=Max("updated_at")),
             CellAssignment.objects.aggregate(n=Count("id"), m=Max("id")),
             Exposure.objects.aggregate(n=Count("id"), m=Max("id"), u=Max("updated_at"))]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def refresh_quality(force: bool = False) -> bool:
    """Bring the quality copy up to date with labels, flags, cells and exposures; True when it
    was rebuilt. Cheap when nothing changed (a few aggregates)."""
    from recommender.models import ExposureQuality, QualityStamp

    stamp = _stamp()
    current = QualityStamp.objects.filter(pk=1).values_list("stamp", flat=True).first()
    if current == stamp and not force:
        return False
    with transaction.atomic():
        state, _ = QualityStamp.objects.select_for_update().get_or_create(pk=1, defaults={"stamp": ""})
        if state.stamp == stamp and not force:
            return False
        ExposureQuality.objects.all().delete()
        science = Exposure.objects.filter(is_science=True).order_by("pk")
        last = 0
        while True:
            chunk = list(science.filter(pk__gt=last)[:2000])
            if not chunk:
                break
            last = chunk[-1].pk
            ExposureQuality.objects.bulk_create([
                ExposureQuality(exposure_id=v.exposure_id, desom2_cell=v.cell, quality_label=v.label,
                                quality_flags=",".join(f["name"] for f in v.flags) or None,
                                label_probability=obscore.label_probability(v))
                for v in quality.quality_verdicts(chunk)])
        state.stamp = stamp
        state.save()
    return True


# --- a query ------------------------------------------------------------------------------------------

@dataclass
class TapResult:
    columns: list[Column]
    rows: list[dict]
    overflow: bool
    maxrec: int


def _single(params, name):
    values = params.get(name, [])
    if len(values) > 1:
        raise TapError(f"{name}: give one value, not {len(values)}")
    return values[0] if values else None


def parse_request(params) -> tuple[str, int]:
    request = _single(params, "REQUEST")
    if request is not None and request.strip().lower() != "doquery":
        raise TapError(f"REQUEST: only doQuery is supported, not {request!r}")
    lang = _single(params, "LANG")
    if lang is None:
        raise TapError("LANG: give the query language (ADQL)")
    if lang.strip().upper() not in ("ADQL", "ADQL-2.0", "ADQL-2.1"):
        raise TapError(f"LANG: only ADQL is supported, not {lang!r}")
    tap_output.choose(params)   # RESPONSEFORMAT / FORMAT: one of the offered formats
    query = _single(params, "QUERY")
    if not query or not query.strip():
        raise TapError("QUERY: give an ADQL query")
    if len(query) > MAX_QUERY_LENGTH:
        raise TapError(f"QUERY: at most {MAX_QUERY_LENGTH} characters")
    if "\x00" in query:
        raise TapError("QUERY: NUL characters are not allowed")
    maxrec = DEFAULT_MAXREC
    text = _single(params, "MAXREC")
    if text is not None:
        try:
            maxrec = int(text)
        except ValueError:
            raise TapError(f"MAXREC: {text!r} is not a whole number") from None
        if maxrec < 0:
            raise TapError("MAXREC: must not be negative")
    return query, min(maxrec, MAX_MAXREC)


_QUOTED = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")""")
_EXPONENT = re.compile(r"(?<![\w.])((?:\d+\.?\d*|\.\d+)[eE][-+]?\d+)(?![\w.])")
MAX_EXPONENT = 400


def _plain_number(match) -> str:
    from decimal import Decimal

    value = Decimal(match.group(1))
    if abs(value.adjusted()) > MAX_EXPONENT:
        raise TapError(f"ADQL: the number {match.group(1)} is out of range")
    return format(value, "f")


def expand_exponents(adql: str) -> str:
    """ADQL's exact numeric literals with an exponent (5E-7, 1e3), which the translator's grammar
    lacks, written out in full (0.0000005, 1000); string literals and quoted names untouched."""
    parts = _QUOTED.split(adql)
    return "".join(part if i % 2 else _EXPONENT.sub(_plain_number, part) for i, part in enumerate(parts))


def translate(adql: str, uploads=()) -> str:
    """ADQL to PostgreSQL/pgSphere, checked: only the published tables (and this query's
    TAP_UPLOAD tables) and allowed functions."""
    from queryparser.adql import ADQLQueryTranslator
    from queryparser.exceptions import QueryError, QuerySyntaxError
    from queryparser.postgresql import PostgreSQLQueryProcessor

    try:
        sql = ADQLQueryTranslator(expand_exponents(adql)).to_postgresql()
    except QuerySyntaxError as exc:
        where = ", ".join(f"line {line} column {col} near {text!r}" for line, col, text in exc.syntax_errors[:3])
        raise TapError(f"ADQL syntax error ({where}); the service runs one SELECT statement") from None
    except QueryError as exc:
        raise TapError(f"ADQL: {exc}") from None
    except Exception as exc:  # the translator's own failures on odd input
        raise TapError(f"ADQL: cannot translate the query ({type(exc).__name__})") from None
    try:
        processor = PostgreSQLQueryProcessor()
        processor.set_query(sql)
        processor.process_query()
    except QuerySyntaxError:
        raise TapError("ADQL: the query uses a function or construct this service does not offer") from None
    except QueryError as exc:
        raise TapError(f"ADQL: {exc} (name tables with their schema, e.g. ivoa.obscore)") from None
    except Exception as exc:
        raise TapError(f"ADQL: cannot check the query ({type(exc).__name__})") from None
    published = PUBLISHED | {("tap_upload", upload.name) for upload in uploads}
    for schema, table in processor.tables:
        if ((schema or "").lower(), (table or "").lower()) not in published:
            name = f"{schema}.{table}" if schema else table
            raise TapError(f"table {name} is not published here; query ivoa.obscore or TAP_SCHEMA's tables")
    for function in processor.functions:
        if function.lower().rstrip("_") not in ALLOWED_FUNCTIONS:
            raise TapError(f"function {function} is not available in this service's ADQL")
    return sql.rstrip().rstrip(";")


_LITERAL = re.compile(r"('(?:[^']|'')*')")
_OBSCORE = re.compile(r'"?\bivoa\b"?\s*\.\s*"?\bobscore\b"?', re.IGNORECASE)


def _point_at_request_view(sql: str, view: str) -> str:
    """Every reference to ivoa.obscore, outside string literals, becomes the request's view."""
    parts = _LITERAL.split(sql)
    return "".join(part if i % 2 else _OBSCORE.sub(view, part) for i, part in enumerate(parts))


def _visible_ids_sql(user) -> str:
    """The archive's access rule, compiled by Django to SQL with its values quoted in."""
    queryset = selectors.visible_science_exposures(user).values("pk")
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        return cursor.mogrify(sql, params).decode()


_SPHERE_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _sphere_values(text: str) -> list[float]:
    import math

    return [math.degrees(float(v)) for v in _SPHERE_NUMBER.findall(text)]


def _upload_reference(name: str) -> re.Pattern:
    return re.compile(rf'"?\btap_upload\b"?\s*\.\s*"?\b{re.escape(name)}\b"?', re.IGNORECASE)


def _point_at_uploads(sql: str, tables: dict[str, str]) -> str:
    """Every TAP_UPLOAD.name, outside string literals, becomes this query's temporary table."""
    parts = _LITERAL.split(sql)
    for name, temp in tables.items():
        pattern = _upload_reference(name)
        parts = [part if i % 2 else pattern.sub(temp, part) for i, part in enumerate(parts)]
    return "".join(parts)


def _create_upload_tables(cursor, uploads, temps: dict[str, str], role: bool) -> None:
    from psycopg2.extras import execute_values

    for upload in uploads:
        temp = temps[upload.name]
        columns = ", ".join(f'"{c.name}" {t}' for c, t in zip(upload.columns, upload.sql_types))
        cursor.execute(f"CREATE TEMP TABLE {temp.split('.', 1)[1]} ({columns}) ON COMMIT DROP")
        if upload.rows:
            execute_values(cursor.cursor, f"INSERT INTO {temp} VALUES %s", upload.rows, page_size=1000)
        if role:
            cursor.execute(f"GRANT SELECT ON {temp} TO {TAP_ROLE}")


def run_sync(params, user, base_url: str, *, uploads=(), timeout: float | None = None) -> TapResult:
    """One query, for a sync request or an async job alike: `uploads` are its TAP_UPLOAD tables
    (`tap_upload.UploadTable`), `timeout` its limit in seconds (TAP_TIMEOUT_S by default)."""
    ok, why = available()
    if not ok:
        raise TapError(why, "FatalFault", 501)
    limit_s = timeout_s() if timeout is None else float(timeout)
    adql, maxrec = parse_request(params)
    sql = translate(adql, uploads)
    refresh_quality()
    view = f"pg_temp.ivoa_obscore_{uuid.uuid4().hex[:12]}"
    sql = _point_at_request_view(sql, view)
    temps = {u.name: f"pg_temp.tap_upload_{uuid.uuid4().hex[:12]}" for u in uploads}
    sql = _point_at_uploads(sql, temps)
    names = ", ".join(c.name for c in obscore.COLUMNS)
    visible = _visible_ids_sql(user)
    from psycopg2 import errors as pg_errors

    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE TEMP VIEW {view.split('.', 1)[1]} AS SELECT {names} "
                               f"FROM {INTERNAL_SCHEMA}.obscore_all o WHERE o.exposure_id IN ({visible})")
                role = _has_role(cursor)
                if role:
                    cursor.execute(f"GRANT SELECT ON {view} TO {TAP_ROLE}")
                _create_upload_tables(cursor, uploads, temps, role)
                cursor.execute("SELECT set_config('desom.base_url', %s, true)", [base_url.rstrip("/")])
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(int(limit_s * 1000))])
                if role:
                    cursor.execute(f"SET LOCAL ROLE {TAP_ROLE}")
                oids = _sphere_oids(cursor)
                origins = _column_origins(cursor, view)
                origins.update(_upload_origins(cursor, uploads, temps))
            raw = connection.connection.cursor(name=f"tap_{uuid.uuid4().hex[:12]}")
            try:
                raw.execute(sql)
                fetched = raw.fetchmany(maxrec + 1) if maxrec else raw.fetchmany(1)
                description = raw.description
            finally:
                raw.close()
            transaction.set_rollback(True)
    except pg_errors.QueryCanceled:
        raise TapError(f"the query ran past this service's limit of {limit_s:g} s; narrow it "
                       "(a spatial constraint, TOP, fewer joins)") from None
    except (pg_errors.InsufficientPrivilege, pg_errors.ReadOnlySqlTransaction) as exc:
        raise TapError(f"refused: {str(exc).strip().splitlines()[0]}") from None
    except Exception as exc:
        import psycopg2

        if isinstance(exc, psycopg2.Error) or exc.__class__.__module__.startswith("django.db"):
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TapError(f"the query failed: {message.replace(view, 'ivoa.obscore')}") from None
        raise
    overflow = len(fetched) > maxrec
    columns = output_columns(description, oids, origins)
    rows = []
    for record in fetched[:maxrec]:
        row = {}
        # By position: two output columns of one name (MIN(t_min), MIN(em_min)) each keep their value.
        for column, value in zip(columns, record):
            if value is not None and column.xtype == REGION_XTYPE:
                value = "POLYGON ICRS " + " ".join(repr(v) for v in _sphere_values(value))
            elif value is not None and column.xtype in ("polygon", "point", "circle"):
                value = _sphere_values(value)
            elif isinstance(value, dt.datetime):
                value = value.isoformat(timespec="milliseconds")     # a DALI timestamp
            elif value is not None and column.datatype == "char":
                value = str(value)
            row[column.name] = value
        rows.append(row)
    return TapResult(columns, rows, overflow, maxrec)


def _sphere_oids(cursor) -> dict[int, str]:
    cursor.execute("SELECT oid, typname FROM pg_type WHERE typname IN ('spoly', 'spoint', 'scircle', 'sbox')")
    return {oid: name for oid, name in cursor.fetchall()}


_PG_TYPES = {16: "boolean", 20: "long", 21: "short", 23: "int", 700: "float", 701: "double", 1700: "double"}
_PG_TIMESTAMPS = {1114, 1184}


def _column_origins(cursor, view: str) -> dict[int, list[Column]]:
    """The published relations of this request by their PostgreSQL oid, each with its columns
    in order: PostgreSQL says which relation and column an output column is a plain copy of."""
    tables = published_columns()
    relations = {view: tables["ivoa.obscore"]}
    relations.update({f"tap_schema.{name}": tables[f"tap_schema.{name}"] for name in TAP_SCHEMA_COLUMNS})
    cursor.execute("SELECT r, to_regclass(r)::oid FROM unnest(%s::text[]) AS r", [list(relations)])
    return {oid: relations[name] for name, oid in cursor.fetchall() if oid is not None}


def _upload_origins(cursor, uploads, temps: dict[str, str]) -> dict[int, list[Column]]:
    found = {}
    for upload in uploads:
        cursor.execute("SELECT to_regclass(%s)::oid", [temps[upload.name]])
        found[cursor.fetchone()[0]] = upload.columns
    return found


def _unique_name(name: str, taken: set[str]) -> str:
    if name == "?column?":              # PostgreSQL's name of an expression without an alias
        name = "expr"
    candidate, n = name, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate.lower())
    return candidate


def output_columns(description, sphere: dict[int, str], origins: dict[int, list[Column]]) -> list[Column]:
    """The result's columns, one per output column in order, each with a name of its own (a
    repeated name gets _2, _3 ...). A column that copies a published column (whatever its alias)
    carries that column's unit, UCD and description; any other is described by its type only."""
    taken: set[str] = set()
    columns = []
    for d in description:
        name = _unique_name(d.name, taken)
        source = origins.get(getattr(d, "table_oid", None) or 0)
        attnum = getattr(d, "table_column", None) or 0
        base = source[attnum - 1] if source and 0 < attnum <= len(source) else None
        columns.append(_result_column(name, d.type_code, sphere, base))
    return columns


def _result_column(name: str, oid: int, sphere: dict[int, str], base: Column | None) -> Column:
    kind = sphere.get(oid)
    if kind:
        xtype = {"spoly": "polygon", "spoint": "point", "scircle": "circle", "sbox": "polygon"}[kind]
        if base is not None and base.xtype in (xtype, REGION_XTYPE):
            return replace(base, name=name)
        return Column(name, "double", "deg", None, None, "", xtype=xtype, arraysize="*")
    datatype = _PG_TYPES.get(oid, "char")
    if base is not None:
        return replace(base, name=name, datatype=datatype, principal=False, indexed=False, std=False)
    if oid in _PG_TIMESTAMPS:
        return Column(name, "char", xtype="timestamp", arraysize="*")
    return Column(name, datatype)


def results_votable(result: TapResult, links_url: str, serialization: str = "tabledata") -> bytes:
    from .services import datalink_descriptor

    votable = new_votable()
    resource = Resource(type="results")
    votable.resources.append(resource)
    resource.infos.append(status_info("OK"))
    add_table(votable, resource, result.columns, result.rows)
    if result.overflow:
        resource.infos[0].value = "OVERFLOW"
        resource.infos[0].content = f"more than MAXREC={result.maxrec} rows; narrow the query"
    if any(c.name == "obs_publisher_did" for c in result.columns):
        votable.resources.append(datalink_descriptor(votable, links_url))
    return serialise(votable, serialization)


# --- VOSI -------------------------------------------------------------------------------------------

def wants_esa_flags(user_agent: str | None) -> bool:
    """astroquery's TapPlus: it names itself when it POSTs, and its GETs carry no User-Agent."""
    return not user_agent or user_agent.startswith("astroquery/")


def tables_xml(esa_flags: bool = False) -> bytes:
    """VOSI tables (VODataService 1.1 tableset): the published schemas, tables and columns, with
    their foreign keys; `esa_flags` adds the attribute astroquery's TapPlus needs."""
    schemas: dict[str, list[str]] = {}
    tables = published_columns()
    for table in tables:
        schemas.setdefault(table.split(".")[0], []).append(table)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<vosi:tableset xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0" '
           'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" '
           'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
           + (' xmlns:esatapplus="http://esa.int/xml/EsaTapPlus">' if esa_flags else ">")]
    # astroquery's TapPlus reads a column only when it carries ESA's esatapplus:flags attribute
    # (0: no ESA flag), which VODataService 1.1 (and so taplint) does not allow.
    esa = ' esatapplus:flags="0"' if esa_flags else ""
    for schema, names in schemas.items():
        out.append(f"  <schema><name>{schema}</name>")
        for table in names:
            out.append(f'    <table type="view"><name>{table}</name>'
                       f"<description>{escape(TABLE_DESCRIPTIONS[table])}</description>")
            for c in tables[table]:
                std = ' std="true"' if c.std else ""
                out.append(f"      <column{std}{esa}><name>{escape(adql_name(c.name))}</name>")
                if c.description:
                    out.append(f"        <description>{escape(c.description)}</description>")
                if c.unit:
                    out.append(f"        <unit>{escape(c.unit)}</unit>")
                if c.ucd:
                    out.append(f"        <ucd>{escape(c.ucd)}</ucd>")
                if c.utype:
                    out.append(f"        <utype>{escape(c.utype)}</utype>")
                attrs = f' arraysize="{c.size}"' if c.size else ""
                attrs += f' extendedType="{c.xtype}"' if c.xtype else ""
                out.append(f'        <dataType xsi:type="vs:VOTableType"{attrs}>{c.datatype}</dataType>')
                flags = (["indexed"] if c.indexed else []) + (["principal"] if c.principal else [])
                out += [f"        <flag>{f}</flag>" for f in flags]
                out.append("      </column>")
            for key, source, target, pairs in FOREIGN_KEYS:
                if source == table:
                    out.append(f"      <foreignKey><targetTable>{target}</targetTable>")
                    out += [f"        <fkColumn><fromColumn>{a}</fromColumn><targetColumn>{b}</targetColumn></fkColumn>"
                            for a, b in pairs]
                    out.append(f"        <description>{escape(source)} refers to {escape(target)}</description>"
                               "</foreignKey>")
            out.append("    </table>")
        out.append("  </schema>")
    out.append("</vosi:tableset>")
    return ("\n".join(out) + "\n").encode()


# The ADQL geometry functions the translator carries to pgSphere (AREA, CENTROID, COORD1/2,
# COORDSYS and REGION are not: it refuses them).
GEOMETRY_FEATURES = ["POINT", "CIRCLE", "BOX", "POLYGON", "CONTAINS", "INTERSECTS", "DISTANCE"]
# A script's token ("Authorization: Token ..."; README "Scripted access"): IVOA SSO's token method.
TOKEN_SECURITY_METHOD = "ivo://ivoa.net/sso#token"
_FORMAT_IDS = {"votable": "ivo://ivoa.net/std/TAPRegExt#output-votable-td",
               "votable/b2": "ivo://ivoa.net/std/TAPRegExt#output-votable-binary2"}


def _output_format(output) -> str:
    ivo_id = f' ivo-id="{_FORMAT_IDS[output.name]}"' if output.name in _FORMAT_IDS else ""
    return (f"    <outputFormat{ivo_id}>\n      <mime>{escape(output.mime)}</mime>\n"
            f"      <alias>{escape(output.name)}</alias>\n    </outputFormat>\n")


def capabilities_body(base: str) -> str:
    from . import tap_upload, uws
    from .services import vosi_capability

    base = base.rstrip("/")
    lifetime_s = int(uws.lifetime().total_seconds())
    default_s, hard_s = uws.default_duration(), uws.max_duration()
    upload_bytes = tap_upload.limits()[1]
    body = vosi_capability("ivo://ivoa.net/std/VOSI#capabilities", f"{base}/capabilities")
    body += vosi_capability("ivo://ivoa.net/std/VOSI#availability", f"{base}/availability")
    body += vosi_capability("ivo://ivoa.net/std/VOSI#tables-1.1", f"{base}/tables")
    body += f"""  <capability standardID="ivo://ivoa.net/std/DALI#examples">
    <interface xsi:type="vr:WebBrowser">
      <accessURL use="full">{escape(base)}/examples</accessURL>
    </interface>
  </capability>
"""
    body += f"""  <capability standardID="{TAP_STANDARD_ID}" xsi:type="tr:TableAccess">
    <interface xsi:type="vs:ParamHTTP" role="std" version="1.1">
      <accessURL use="base">{escape(base)}</accessURL>
    </interface>
    <interface xsi:type="vs:ParamHTTP" role="std" version="1.1">
      <accessURL use="base">{escape(base)}</accessURL>
      <securityMethod standardID="{TOKEN_SECURITY_METHOD}"/>
    </interface>
    <dataModel ivo-id="ivo://ivoa.net/std/ObsCore#core-1.1">ObsCore-1.1</dataModel>
    <language>
      <name>ADQL</name>
      <version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version>
      <description>ADQL 2.0, translated to PostgreSQL with pgSphere</description>
      <languageFeatures type="ivo://ivoa.net/std/TAPRegExt#features-adqlgeo">
{"".join(f"        <feature><form>{form}</form></feature>{chr(10)}" for form in GEOMETRY_FEATURES)}      </languageFeatures>
    </language>
{"".join(_output_format(f) for f in tap_output.FORMATS)}    <uploadMethod ivo-id="ivo://ivoa.net/std/TAPRegExt#upload-inline"/>
    <uploadMethod ivo-id="ivo://ivoa.net/std/TAPRegExt#upload-http"/>
    <uploadMethod ivo-id="ivo://ivoa.net/std/TAPRegExt#upload-https"/>
    <retentionPeriod>
      <default>{lifetime_s}</default>
      <hard>{lifetime_s}</hard>
    </retentionPeriod>
    <executionDuration>
      <default>{default_s}</default>
      <hard>{hard_s}</hard>
    </executionDuration>
    <outputLimit>
      <default unit="row">{DEFAULT_MAXREC}</default>
      <hard unit="row">{MAX_MAXREC}</hard>
    </outputLimit>
    <uploadLimit>
      <hard unit="byte">{upload_bytes}</hard>
    </uploadLimit>
  </capability>
"""
    return body

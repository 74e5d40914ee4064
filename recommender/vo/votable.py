"""VOTable pieces every VO surface shares: tables of typed columns, DALI status and errors,
service descriptors (DataLink's "adhoc:service" resources). One error writer for SIA, TAP,
DataLink and SODA: a VOTable whose QUERY_STATUS is ERROR and whose message starts with a DALI
fault code (UsageFault for a bad request, TransientFault when the service cannot answer now,
FatalFault when it failed)."""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field

import numpy as np
from astropy.io.votable.tree import Field, Group, Info, Param, Resource, TableElement, VOTableFile

VOTABLE_MIME = "application/x-votable+xml"
DATALINK_MIME = "application/x-votable+xml;content=datalink"
USAGE, TRANSIENT, FATAL, NOT_FOUND = "UsageFault", "TransientFault", "FatalFault", "NotFoundFault"


@dataclass(frozen=True)
class Column:
    """One column of a VO table (VOTable FIELD and TAP_SCHEMA.columns row alike)."""
    name: str
    datatype: str                 # VOTable datatype: char, short, int, long, double, boolean
    unit: str | None = None
    ucd: str | None = None
    utype: str | None = None
    description: str = ""
    xtype: str | None = None
    arraysize: str | None = None  # "*" for strings and variable arrays
    principal: bool = False
    indexed: bool = False
    std: bool = False             # defined by a standard (ObsCore), not by this archive

    @property
    def size(self) -> str | None:
        return self.arraysize or ("*" if self.datatype == "char" else None)


@dataclass
class ServiceParam:
    name: str
    datatype: str = "char"
    description: str = ""
    value: str = ""
    ref: str | None = None        # the ID of a result column that supplies the value
    unit: str | None = None
    ucd: str | None = None
    xtype: str | None = None
    arraysize: str | None = None
    options: list = field(default_factory=list)


def new_votable() -> VOTableFile:
    return VOTableFile(version="1.4")


def make_field(votable, column: Column, ID: str | None = None) -> Field:
    kwargs = {}
    if column.size:
        kwargs["arraysize"] = column.size
    if column.xtype:
        kwargs["xtype"] = column.xtype
    made = Field(votable, name=column.name, ID=ID or column.name, datatype=column.datatype, unit=column.unit,
                 ucd=column.ucd, utype=column.utype, **kwargs)
    made.description = column.description or None
    return made


def field_ids(columns: list[Column]) -> list[str]:
    """An XML ID for each column: its name where that is one, made one otherwise, never twice."""
    taken: set[str] = set()
    ids = []
    for column in columns:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", column.name) or "col"
        if not re.match(r"[A-Za-z_]", base):
            base = "_" + base
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate)
        ids.append(candidate)
    return ids


def status_info(value: str, text: str = "") -> Info:
    info = Info(name="QUERY_STATUS", value=value)
    info.content = text or None
    return info


def serialise(votable: VOTableFile, serialization: str = "tabledata") -> bytes:
    out = io.BytesIO()
    votable.to_xml(out, tabledata_format=serialization)
    return out.getvalue()


def fault(code: str, message: str) -> str:
    """A DALI error message: the fault code, then what went wrong."""
    return message if message.split(":", 1)[0] in (USAGE, TRANSIENT, FATAL, NOT_FOUND) else f"{code}: {message}"


def error_votable(message: str, code: str = USAGE) -> bytes:
    votable = new_votable()
    resource = Resource(type="results")
    votable.resources.append(resource)
    resource.infos.append(status_info("ERROR", fault(code, message)))
    return serialise(votable)


def _missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and not math.isfinite(value):
        return True
    return isinstance(value, np.ndarray) and value.size == 0


def _placeholder(column: Column):
    if column.size and column.datatype != "char":
        return np.zeros(0, dtype=float)
    if column.datatype == "char":
        return ""
    if column.datatype == "boolean":
        return False
    return 0.0 if column.datatype in ("double", "float") else 0


def add_table(votable, resource, columns: list[Column], rows: list[dict], name: str = "results") -> TableElement:
    """A TABLE of `columns` holding `rows` (dicts by column name; None is a null)."""
    table = TableElement(votable, name=name)
    resource.tables.append(table)
    table.fields.extend(make_field(votable, c, ID) for c, ID in zip(columns, field_ids(columns)))
    table.create_arrays(len(rows))
    for i, row in enumerate(rows):
        values, mask = [], []
        for column in columns:
            value = row.get(column.name)
            if isinstance(value, (list, tuple)):
                value = np.asarray(value, dtype=float)
            missing = _missing(value)
            mask.append(missing)
            values.append(_placeholder(column) if missing else value)
        table.array[i] = tuple(values)
        table.array.mask[i] = tuple(mask)
    return table


class _EmptyValue:
    """A converter that writes an empty value and otherwise is the one it wraps."""

    def __init__(self, converter):
        self._converter = converter

    def output(self, value, mask):
        return ""

    def __getattr__(self, name):
        return getattr(self._converter, name)


def service_descriptor(votable, ID: str, standard_id: str | None, access_url: str, params: list[ServiceParam],
                       description: str = "") -> Resource:
    """A DataLink service descriptor: how to call a service, its input parameters either given
    (`value`) or taken from a column of the results (`ref`)."""
    resource = Resource(type="meta", ID=ID)
    resource.utype = "adhoc:service"
    if description:
        resource.description = description
    if standard_id:
        resource.params.append(Param(votable, name="standardID", ID=f"{ID}-standardID", datatype="char", arraysize="*",
                                     value=standard_id))
    resource.params.append(Param(votable, name="accessURL", ID=f"{ID}-accessURL", datatype="char", arraysize="*",
                                 value=access_url))
    group = Group(votable, name="inputParams", ID=f"{ID}-inputParams")
    for spec in params:
        kwargs = {}
        arraysize = spec.arraysize or ("*" if spec.datatype == "char" else None)
        if arraysize:
            kwargs["arraysize"] = arraysize
        if spec.xtype:
            kwargs["xtype"] = spec.xtype
        param = Param(votable, name=spec.name, ID=f"{ID}-{spec.name}", datatype=spec.datatype, value=spec.value, ref=spec.ref,
                      unit=spec.unit, ucd=spec.ucd, **kwargs)
        param.description = spec.description or None
        if not spec.value and not spec.ref and arraysize and arraysize != "*" and spec.datatype != "char":
            # A fixed-size input the caller fills in (SODA's CIRCLE): astropy would write zeros
            # ("0 0 0"), which a client sends unless it replaces them; the value stays empty.
            param.converter = _EmptyValue(param.converter)
        if spec.options:
            from astropy.io.votable.tree import Values

            values = Values(votable, param)
            values.options.extend((str(o), str(o)) for o in spec.options)
            param.values = values
        group.entries.append(param)
    resource.groups.append(group)
    return resource

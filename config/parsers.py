"""A JSON parser with limits: no document of this API nests deeper than a few levels, so a
deeply nested one (which would exhaust Python's recursion and fail the request with a 500) is a
400 before it is decoded, and a body larger than DATA_UPLOAD_MAX_MEMORY_SIZE is refused unread."""
from __future__ import annotations

import codecs
import json
import re

from django.conf import settings
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

MAX_JSON_DEPTH = 32


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str, stop_above: int | None = None) -> int:
    """Deepest nesting of arrays and objects in a JSON text (brackets inside strings do not
    count), without recursion; stops counting once past `stop_above`."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


class RequestTooLarge(APIException):
    status_code = 413
    default_code = "request_too_large"
    default_detail = "the request body is too large"


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        limit = int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge(f"the JSON document is larger than {limit} bytes")
        try:
            text = codecs.decode(raw, encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"the JSON document is not valid {encoding}: {exc}")
        if json_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise ParseError(f"the JSON document nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            return json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}")


def _no_constant(name):
    raise ValueError(f"{name} is not valid JSON")

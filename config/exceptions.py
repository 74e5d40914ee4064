"""API error handling: every error a DRF view raises answers in the one JSON shape of
`config.errors` (status, code, detail, and fields for invalid input). Values the database
rejects as out of range and any desom.errors.UserError are the client's mistake (400 with a
clear message), a request body that is too large is a 413, and a database that is down is a
503, never a bare 500."""
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db import DataError, DatabaseError, InterfaceError, OperationalError
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from desom.errors import UserError

from .errors import error_body

GENERAL_KEYS = ("detail", "non_field_errors")


def _messages(value) -> list[str]:
    if isinstance(value, dict):
        return [f"{key}: {message}" for key, inner in value.items() for message in _messages(inner)]
    if isinstance(value, (list, tuple)):
        return [message for inner in value for message in _messages(inner)]
    return [str(value)]


def validation_body(detail) -> dict:
    """A ValidationError's detail (dict, list or string) as the one shape: one sentence in
    `detail`, and the messages per field under `fields`."""
    if isinstance(detail, dict):
        fields = {key: _messages(value) for key, value in detail.items() if key not in GENERAL_KEYS}
        general = [m for key in GENERAL_KEYS if key in detail for m in _messages(detail[key])]
    else:
        fields, general = {}, _messages(detail)
    sentence = "; ".join(general + [f"{key}: {' '.join(messages)}" for key, messages in fields.items()])
    return error_body(400, sentence or "invalid input", "invalid", fields or None)


def _code(exc: APIException) -> str:
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def api_exception_handler(exc, context):
    if isinstance(exc, (RequestDataTooBig, TooManyFieldsSent)):
        return Response(error_body(413, f"the request is too large ({exc})", "request_too_large"),
                        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, UserError):
        # Any user error a view lets through is the caller's to fix: 400 with its message.
        return Response(error_body(400, str(exc), "invalid"), status=status.HTTP_400_BAD_REQUEST)
    response = exception_handler(exc, context)
    if response is not None:
        if isinstance(exc, ValidationError):
            response.data = validation_body(exc.detail)
        else:
            detail = exc.detail if isinstance(exc, APIException) else response.data.get("detail", "")
            response.data = error_body(response.status_code, " ".join(_messages(detail)),
                                       _code(exc) if isinstance(exc, APIException) else None)
        return response
    if isinstance(exc, (OverflowError, DataError, DatabaseError)):
        # The request's transaction is broken: roll it back so the connection stays usable.
        set_rollback()
    if isinstance(exc, (OverflowError, DataError)):
        return Response(error_body(400, "a value in the request is out of range", "out_of_range"),
                        status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, (OperationalError, InterfaceError, DatabaseError)):
        return Response(error_body(503, "the archive database is unavailable; try again shortly", "unavailable"),
                        status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "30"})
    return None

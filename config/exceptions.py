"""API error handling: values the database rejects as out of range are the client's mistake
(400 with a clear message), and a database that is down is a 503, never a bare 500."""
from django.db import DataError, DatabaseError, InterfaceError, OperationalError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback


def api_exception_handler(exc, context):
    response = exception_handler(exc, context)
    if response is not None:
        return response
    if isinstance(exc, (OverflowError, DataError, DatabaseError)):
        # The request's transaction is broken: roll it back so the connection stays usable.
        set_rollback()
    if isinstance(exc, (OverflowError, DataError)):
        return Response({"detail": "a value in the request is out of range"}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, (OperationalError, InterfaceError, DatabaseError)):
        return Response({"detail": "the archive database is unavailable; try again shortly"},
                        status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "30"})
    return None

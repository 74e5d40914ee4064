"""Request bodies sent without a Content-Length (HTTP/1.1 chunked transfer), as STILTS and
TOPCAT send TAP uploads. Django reads only Content-Length bodies; under gunicorn, which removes
the chunked framing, this middleware reads such a body (at most the route's limit,
`config.middleware.body_limit`, or it answers 413) and hands it on with its length. Any other
server answers 411 (Length Required)."""
from __future__ import annotations

import tempfile

from django.core.handlers.wsgi import LimitedStream

from config import errors
from config.middleware import body_limit

SPOOL_BYTES = 2 * 1024 * 1024


class ChunkedBodyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        meta = request.META
        if "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower() and not meta.get("CONTENT_LENGTH"):
            if not str(meta.get("SERVER_SOFTWARE", "")).startswith("gunicorn"):
                return errors.error_response(request, 411, "send the body with a Content-Length", "length_required")
            limit = body_limit(request.path_info)
            body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
            size = 0
            stream = meta["wsgi.input"]
            while True:
                chunk = stream.read(min(64 * 1024, limit + 1 - size))
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    return errors.error_response(
                        request, 413, f"the request body is more than {limit} bytes, the most this route accepts",
                        "request_too_large")
                body.write(chunk)
            body.seek(0)
            meta["CONTENT_LENGTH"] = str(size)
            request._stream = LimitedStream(body, size)
            request._read_started = False
        return self.get_response(request)

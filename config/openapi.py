"""The OpenAPI schema's error answers: every documented operation lists the 4xx (and 503) it
can answer, each with the one error shape of config.errors (`Error`), so a client generated
from the schema knows what a refusal looks like."""

ERROR_SCHEMA = {
    "type": "object",
    "description": "every error of the API has this shape (config.errors)",
    "required": ["status", "code", "detail"],
    "properties": {
        "status": {"type": "integer", "description": "the HTTP status"},
        "code": {"type": "string", "description": "a machine-readable code (not_found, invalid, throttled ...)"},
        "detail": {"type": "string", "description": "a sentence for a person"},
        "fields": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                   "description": "for invalid input: the messages of each parameter or field"},
    },
}
_WHY = {
    "400": "invalid input: an unknown parameter, a value out of range, a label or flag that does not exist",
    "401": "not authenticated (a write needs a staff session or token)",
    "403": "authenticated but not allowed",
    "404": "no such object, or one this user may not see",
    "413": "the request body is larger than this route accepts",
    "429": "too many requests from this client; retry after the Retry-After header",
    "503": "the database or a search index is unavailable",
}
_WRITES = {"post", "put", "patch", "delete"}


def add_error_responses(result, generator, request, public):
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes = ["400", "404", "429", "503"]
            if method in _WRITES:
                codes += ["401", "403"]
                body = operation.get("requestBody", {}).get("content", {})
                if "multipart/form-data" in body:
                    codes.append("413")
            for code in sorted(codes):
                operation["responses"].setdefault(code, {"description": _WHY[code], "content": reference})
    return result

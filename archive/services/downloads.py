"""Downloads as a data centre serves them: the file's sha256 (which the archive recorded at
ingest) as ETag and Repr-Digest, byte ranges so a 700 MB transfer resumes where it broke, and
manifests (URLs with checksums) that curl, wget and sha256sum read as they are."""
from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

from django.urls import reverse

MANIFEST_PAGE = 10_000
MANIFEST_OUTPUTS = ("urls", "curl", "sha256", "json")
CHUNK = 1 << 20


def download_name(exposure) -> str:
    """A file name safe in a header, a curl config and a checksum list (no path, no quote, no
    control character)."""
    name = (exposure.filename or "").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")
    return name or f"{exposure.expnum}.fits"


def etag(exposure) -> str | None:
    return f'"{exposure.checksum}"' if _is_sha256(exposure.checksum) else None


def digest_headers(exposure) -> dict[str, str]:
    """ETag (the hex sha256, a strong validator: the bytes are the archive's), Repr-Digest
    (RFC 9530) and the older Digest (RFC 3230), both base64 of the same sha256."""
    if not _is_sha256(exposure.checksum):
        return {}
    b64 = base64.b64encode(bytes.fromhex(exposure.checksum)).decode("ascii")
    return {"ETag": etag(exposure), "Repr-Digest": f"sha-256=:{b64}:", "Digest": f"sha-256={b64}"}


def _is_sha256(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


UNSATISFIABLE = "unsatisfiable"


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int          # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(header: str | None, size: int):
    """One byte range of a `Range: bytes=...` header against a file of `size` bytes: a
    ByteRange, UNSATISFIABLE (416), or None (no usable Range: send the whole file). Several
    ranges in one header are answered with the whole file, which RFC 9110 allows."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()) \
            or (last and not last.isdigit()):
        return None
    if not first:                           # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return UNSATISFIABLE
        return ByteRange(max(0, size - n), size - 1)
    start = int(first)
    if start >= size:
        return UNSATISFIABLE
    end = min(int(last), size - 1) if last else size - 1
    if end < start:
        return None
    return ByteRange(start, end)


def iter_range(handle, byte_range: ByteRange, chunk: int = CHUNK):
    """The bytes of one range, a chunk at a time; closes the file at the end."""
    try:
        handle.seek(byte_range.start)
        left = byte_range.length
        while left > 0:
            data = handle.read(min(chunk, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        handle.close()


# --- manifests ------------------------------------------------------------------------------

def manifest_rows(exposures, absolute_url) -> list[dict]:
    return [{"id": e.pk, "expnum": e.expnum, "filename": download_name(e), "size": e.file_size,
             "sha256": e.checksum if _is_sha256(e.checksum) else None,
             "url": absolute_url(reverse("archive:download", args=[e.pk]))} for e in exposures]


def render_manifest(rows: list[dict], output: str, *, total: int, page: int) -> tuple[str, str]:
    """(body, content type) of a manifest in one of MANIFEST_OUTPUTS:

    urls    one URL a line:                    wget --content-disposition -i manifest.txt
    curl    a curl config (url + output):      curl --fail -K manifest.curl
    sha256  `<sha256>  <file>` lines:           sha256sum -c manifest.sha256
    json    every field, with the query's total and page
    """
    if output == "json":
        return json.dumps({"count": total, "page": page, "page_size": MANIFEST_PAGE, "results": rows},
                          indent=1), "application/json"
    if output == "curl":
        lines = [f'url = "{r["url"]}"\noutput = "{r["filename"]}"' for r in rows]
        return "\n".join(["# curl --fail --remote-time -K this-file  (add -H 'Authorization: Token ...' for "
                          "proprietary exposures)"] + lines) + "\n", "text/plain; charset=utf-8"
    if output == "sha256":
        return "".join(f"{r['sha256']}  {r['filename']}\n" for r in rows if r["sha256"]), "text/plain; charset=utf-8"
    return "".join(f"{r['url']}\n" for r in rows), "text/plain; charset=utf-8"

"""Images for the pages and the API, rendered once and cached as files under the data
directory (never on every request). A cached file is keyed by what it shows, so a new model
version or a changed file gets a new image."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.conf import settings


def cache_dir(*parts: str) -> Path:
    path = Path(settings.ARCHIVE_DATA_DIR, "figures", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_png(path: Path, render) -> Path:
    """Render `render() -> bytes` to `path` once; concurrent renders race harmlessly because the
    file is written to a temporary name and renamed into place."""
    if path.exists() and path.stat().st_size > 0:
        return path
    data = render()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    return path


PREVIEW_MAX_WIDTH = 800


def exposure_preview(exposure) -> Path:
    """The exposure's CCD mosaic as a PNG, keyed by its number and checksum."""
    from desom.preview import exposure_preview as render_preview

    key = f"{exposure.expnum}-{exposure.checksum[:12]}-w{PREVIEW_MAX_WIDTH}.png"
    return cached_png(cache_dir("previews") / key,
                      lambda: render_preview(exposure.file_path, max_width=PREVIEW_MAX_WIDTH))

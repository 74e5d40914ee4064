"""Text that people write into the archive (labels, flag names, notes, token names): control
characters are refused at write time, because they end up in HTTP headers, HTML, VOTables and
terminals, where they break or disguise things."""
from __future__ import annotations

import unicodedata

# Line breaks and tabs are fine in free text (notes, descriptions), never in a name.
FREE_TEXT_ALLOWED = {"\n", "\r", "\t"}


def forbidden_characters(text: str, *, free_text: bool = False) -> list[str]:
    """The characters of `text` that may not be stored, as U+XXXX names: C0/C1 controls, DEL,
    and format characters such as bidirectional overrides (which make a label read differently
    from what it is); line and paragraph separators in a name."""
    bad = []
    for char in text or "":
        if free_text and char in FREE_TEXT_ALLOWED:
            continue
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Cs", "Co", "Cn") or (not free_text and category in ("Zl", "Zp")):
            code = f"U+{ord(char):04X}"
            if code not in bad:
                bad.append(code)
    return bad


def check_text(text: str, what: str, *, free_text: bool = False, error=ValueError) -> str:
    bad = forbidden_characters(text, free_text=free_text)
    if bad:
        raise error(f"{what} must not contain control or format characters (found {', '.join(bad[:5])})")
    return text


def header_safe(text: str, limit: int = 900) -> str:
    """`text` fit for an HTTP header value: printable ASCII only (anything else becomes '?',
    controls a space), so a value stored before the write checks existed never breaks a
    response."""
    out = []
    for char in text or "":
        if char in "\r\n\t" or unicodedata.category(char).startswith("C"):
            out.append(" ")
        elif 32 <= ord(char) < 127:
            out.append(char)
        else:
            out.append("?")
    return "".join(out)[:limit]

"""The field's validators, unmodified, on the archive's VO answers (Debian's stilts): votlint on
SIA and TAP answers and their errors, datalinklint on DataLink answers (a known and an unknown
ID together) and its error; the SODA descriptor DataLink offers carries no region of its own."""
import io
import re
import shutil
import subprocess

import pytest
from astropy.io.votable import parse
from django.db import connection
from django.test import Client

from recommender.vo import obscore

STILTS = shutil.which("stilts")
pytestmark = pytest.mark.skipif(STILTS is None, reason="Debian's stilts is absent (apt-get install stilts)")


def _lint(tool: str, body: bytes, tmp_path, name: str) -> str:
    path = tmp_path / f"{name}.xml"
    path.write_bytes(body)
    argument = f"votable={path}" if tool == "votlint" else str(path)
    done = subprocess.run([STILTS, tool, argument], capture_output=True, text=True, timeout=120)
    report = done.stdout + done.stderr
    problems = [line for line in report.splitlines() if line.startswith(("E-", "W-", "ERROR", "WARNING"))
                or "Error" in line and "Errors: 0" not in line and "Totals" not in line]
    assert not problems, f"{tool} on {name}:\n{report[-3000:]}"
    return report


def test_sia_answers_and_errors_pass_votlint(sky, tmp_path):
    client = Client()
    for name, query in (("sia", "POS=CIRCLE 30 -5 2&MAXREC=5"), ("sia-error", "POS=CIRCLE 30 -5"),
                        ("sia-unknown-label", "QUALITY=NoSuchLabel")):
        response = client.get(f"/sia2/query?{query}")
        _lint("votlint", response.content, tmp_path, name)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="TAP runs on PostgreSQL with pgSphere (CI)")
def test_tap_answers_and_errors_pass_votlint(sky, tmp_path):
    client = Client()
    for name, extra in (("tap", {"QUERY": "SELECT TOP 5 obs_id, s_region, s_ra, t_min FROM ivoa.obscore"}),
                        ("tap-b2", {"QUERY": "SELECT TOP 5 * FROM ivoa.obscore", "RESPONSEFORMAT": "votable/b2"}),
                        ("tap-dup", {"QUERY": "SELECT MIN(t_min), MIN(em_min), COUNT(*) FROM ivoa.obscore"}),
                        ("tap-error", {"QUERY": "SELECT nonsense FROM ivoa.obscore"})):
        response = client.post("/tap/sync", {"LANG": "ADQL", **extra})
        _lint("votlint", response.content, tmp_path, name)


def test_datalink_answers_and_errors_pass_datalinklint(sky, tmp_path):
    made, secret = sky
    client = Client()
    known, hidden = obscore.publisher_did(made[0]), obscore.publisher_did(secret)
    response = client.get("/datalink/links", {"ID": [known, hidden, "ivo://desom.archive/exposures?123"]})
    _lint("datalinklint", response.content, tmp_path, "links")
    table = parse(io.BytesIO(response.content)).get_first_table().to_table()
    errors = [r for r in table if r["error_message"]]
    # The hidden and the unknown ID each get an error row, the same one, with its fault.
    assert len(errors) == 2 and all(str(r["error_message"]).startswith("NotFoundFault: ") for r in errors)
    assert {str(r["semantics"]) for r in errors} == {"#this"}
    # The SODA descriptor leaves the region to the caller: no CIRCLE or POLYGON filled in.
    # (read from the XML: astropy parses an empty fixed-size value back as zeros)
    text = response.content.decode()
    for name in ("CIRCLE", "POLYGON", "POS"):
        element = re.search(rf'<PARAM [^>]*ID="soda-{name}"[^>]*>', text).group(0)
        assert 'value=""' in element, element
    assert 'arraysize="3"' in re.search(r'<PARAM [^>]*ID="soda-CIRCLE"[^>]*>', text).group(0)
    _lint("datalinklint", client.get("/datalink/links").content, tmp_path, "links-error")

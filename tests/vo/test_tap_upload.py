"""TAP_UPLOAD (an inline VOTable joined against ivoa.obscore), its bounds before parsing, the
output formats (VOTable TABLEDATA and BINARY2, CSV, TSV, FITS) and ADQL's exponent literals."""
import csv
import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import from_table, parse, writeto
from astropy.table import Table
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from desom import footprint as fp
from recommender.vo import obscore, tap, tap_upload

from .test_tap import SYNC, _refused, _rows, needs_postgres

JOIN = ("SELECT t.name, o.obs_id FROM ivoa.obscore AS o JOIN TAP_UPLOAD.targets AS t "
        "ON 1 = CONTAINS(POINT('ICRS', o.s_ra, o.s_dec), CIRCLE('ICRS', t.ra, t.dec, t.r))")


def targets_votable(targets, radius=0.001) -> bytes:
    """A target list as pyvo sends it: a VOTable of (ra, dec, name) with a search radius."""
    table = Table(rows=[(ra, dec, name, radius) for ra, dec, name in targets], names=("ra", "dec", "name", "r"))
    out = io.BytesIO()
    writeto(from_table(table), out)
    return out.getvalue()


def _upload(client, body, query=JOIN, name="targets", **extra):
    return client.post(SYNC, {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query, "UPLOAD": f"{name},param:part",
                              "part": SimpleUploadedFile("t.xml", body, "application/x-votable+xml"), **extra})


@needs_postgres
def test_an_uploaded_target_list_is_crossmatched_and_proprietary_rows_stay_hidden(sky):
    made, secret = sky
    public = [e for e in made if e.pk != secret.pk]
    centre = (float(np.mean([e.ra_deg for e in made])), float(np.mean([e.dec_deg for e in made])))
    body = targets_votable([(centre[0], centre[1], "centre"), (secret.ra_deg, secret.dec_deg, "secret")], radius=1.0)
    table = _rows(_upload(Client(), body))
    got = sorted((str(r["name"]), int(r["obs_id"])) for r in table)
    expected = sorted((name, e.expnum) for name, (ra, dec) in (("centre", centre), ("secret", (secret.ra_deg,
                                                                                                 secret.dec_deg)))
                      for e in public if fp.angular_distance(ra, dec, e.ra_deg, e.dec_deg) <= 1.0)
    assert got == expected and expected
    assert secret.expnum not in {n for _, n in got}


@needs_postgres
def test_uploads_are_bounded_before_they_are_parsed(sky, settings):
    settings.TAP_UPLOAD_MAX_ROWS = 5
    body = targets_votable([(30.0 + i, -5.0, f"t{i}") for i in range(6)])
    _refused(_upload(Client(), body), "at most 5 are accepted")
    settings.TAP_UPLOAD_MAX_BYTES = 200
    _refused(_upload(Client(), targets_votable([(30.0, -5.0, "a")])), "at most 200 are accepted")
    settings.TAP_UPLOAD_MAX_BYTES = 10_000
    _refused(_upload(Client(), b"<VOTABLE><RESOURCE>not a table"), "not a readable VOTable")
    _refused(_upload(Client(), targets_votable([(1, 2, "a")]), name="1bad"), "table name")
    response = Client().post(SYNC, {"LANG": "ADQL", "QUERY": JOIN, "UPLOAD": "targets,param:missing"})
    _refused(response, "does not carry")
    # A table named by a URL inside this network is never fetched.
    response = Client().post(SYNC, {"LANG": "ADQL", "QUERY": JOIN, "UPLOAD": "targets,http://127.0.0.1:1/t.xml"})
    _refused(response, "public addresses")


def test_upload_parameters_name_their_tables():
    assert tap_upload.parse_upload_parameter(["a,param:x;b,param:y"]) == [("a", "x"), ("b", "y")]
    with pytest.raises(tap_upload.UploadError, match="param:part"):
        tap_upload.parse_upload_parameter(["a,ftp://x"])
    with pytest.raises(tap_upload.UploadError, match="at most 3"):
        tap_upload.parse_upload_parameter(["a,param:1;b,param:2;c,param:3;d,param:4"])


@needs_postgres
@pytest.mark.parametrize("name", ["votable", "votable/b2", "csv", "tsv", "fits"])
def test_every_output_format_carries_the_same_rows(sky, name):
    made, secret = sky
    query = "SELECT obs_id, s_ra, t_min, target_name, s_region FROM ivoa.obscore ORDER BY obs_id"
    expected = sorted((e for e in made if e.pk != secret.pk), key=lambda e: str(e.expnum))
    response = Client().post(SYNC, {"LANG": "ADQL", "QUERY": query, "RESPONSEFORMAT": name})
    assert response.status_code == 200, response.content[:300]
    if name.startswith("votable"):
        parsed = parse(io.BytesIO(response.content))
        assert ("BINARY2" in response.content[:4000].decode("latin-1")) == (name == "votable/b2")
        table = parsed.get_first_table().to_table()
        ids, ras, names = list(table["obs_id"]), list(table["s_ra"]), list(table["target_name"])
    elif name == "fits":
        assert response["Content-Type"] == "application/fits"
        with fits.open(io.BytesIO(response.content)) as hdul:
            data = hdul[1].data
            ids, ras, names = list(data["obs_id"]), list(data["s_ra"]), list(data["target_name"])
    else:
        delimiter = "," if name == "csv" else "\t"
        rows = list(csv.reader(io.StringIO(response.content.decode()), delimiter=delimiter))
        assert rows[0] == ["obs_id", "s_ra", "t_min", "target_name", "s_region"]
        assert rows[1][4].startswith("POLYGON ICRS ")
        ids, ras, names = [r[0] for r in rows[1:]], [float(r[1]) for r in rows[1:]], [r[3] for r in rows[1:]]
    assert [str(v) for v in ids] == [str(e.expnum) for e in expected]
    assert np.allclose([float(v) for v in ras], [e.ra_deg for e in expected], rtol=0, atol=1e-12)
    assert [str(v) for v in names] == [e.object_name for e in expected]


@needs_postgres
def test_an_unknown_format_is_refused_by_name(sky):
    _refused(Client().post(SYNC, {"LANG": "ADQL", "QUERY": "SELECT obs_id FROM ivoa.obscore",
                                  "RESPONSEFORMAT": "xlsx"}), "choose one of votable")


def test_exponent_literals_are_written_out_outside_strings():
    assert tap.expand_exponents("SELECT 1 FROM t WHERE em_min < 5E-7 AND x > 1e3") == \
        "SELECT 1 FROM t WHERE em_min < 0.0000005 AND x > 1000"
    assert tap.expand_exponents("SELECT 'a 5E-7' AS \"1e3\", e5, x1e3 FROM t") == \
        "SELECT 'a 5E-7' AS \"1e3\", e5, x1e3 FROM t"
    with pytest.raises(tap.TapError, match="out of range"):
        tap.expand_exponents("SELECT 1E999999 FROM t")


@needs_postgres
def test_exponent_literals_select_the_same_rows_as_plain_ones(sky):
    made, secret = sky
    Exposure = type(made[0])
    for exposure, band in zip(made[:3], ("u", "g", "g")):
        Exposure.objects.filter(pk=exposure.pk).update(band=band)
    expected = sorted(str(e.expnum) for e in made[:3])
    assert all(obscore.MEGAPRIME_BANDS_M[b][0] < 4.5e-7 for b in "ug") and obscore.MEGAPRIME_BANDS_M["r"][0] > 4.5e-7
    for literal in ("4.5E-7", "45e-8", "0.00000045"):
        table = _rows(Client().post(SYNC, {"LANG": "ADQL",
                                           "QUERY": f"SELECT obs_id FROM ivoa.obscore WHERE em_min < {literal}"}))
        assert sorted(table["obs_id"]) == expected, literal

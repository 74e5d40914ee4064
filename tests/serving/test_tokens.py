"""Scripted access: a username and password give a token; the token alone (no cookie, no
CSRF token) opens every route a session opens, for what its user may see and nothing more; a
revoked token opens nothing. Runs on SQLite and on PostgreSQL (CI's DATABASE_URL)."""
import hashlib
import io
from pathlib import Path

from astropy.io.votable import parse
from django.core.cache import cache
from django.db import connection
from django.test import Client

from archive.models import AccessToken
from archive.services import quality
from config.throttling import ArchiveThrottle

from tests.factories import PASSWORD


def get_token(username, password=PASSWORD, **extra):
    response = Client().post("/api/token/", {"username": username, "password": password, **extra},
                             content_type="application/json")
    return response


def as_token(secret):
    return Client(HTTP_AUTHORIZATION=f"Token {secret}")


def sia_ids(response):
    assert response.status_code == 200, response.content[:300]
    table = parse(io.BytesIO(response.content)).get_first_table().to_table()
    return {int(v) for v in table["obs_id"]}


def test_a_token_opens_every_route_for_what_its_user_may_see(secret_archive):
    secret, users = secret_archive
    cache.clear()
    issued = get_token("pi", name="my laptop")
    assert issued.status_code == 201, issued.content
    token = issued.json()["token"]
    assert issued.json()["name"] == "my laptop" and issued.json()["header"] == f"Authorization: Token {token}"
    pi, other = as_token(token), as_token(get_token("other").json()["token"])
    anonymous = Client()
    data = Path(secret.file_path).read_bytes()
    density = f"/exposures/{secret.pk}/density.png"

    for who, client in (("pi", pi), ("other", other), ("anonymous", anonymous)):
        entitled = who == "pi"
        seen = 200 if entitled else 404
        listed = client.get(f"/api/exposures/?expnum={secret.expnum}")
        assert listed.status_code == 200 and listed.json()["count"] == (1 if entitled else 0), who
        assert client.get(f"/api/exposures/{secret.pk}/").status_code == seen, who
        download = client.get(f"/exposures/{secret.pk}/download/")
        assert download.status_code == seen, who
        if entitled:
            assert b"".join(download.streaming_content) == data
            assert "private" in download["Cache-Control"] and "public" not in download["Cache-Control"]
        assert client.get(f"/exposures/{secret.pk}/preview.png").status_code == seen, who
        assert client.get(density).status_code == seen, who
        assert client.get(f"/exposures/{secret.pk}/").status_code == seen, who
        assert (secret.expnum in sia_ids(client.get("/sia2/query", {"ID": secret.expnum}))) is entitled, who
        around = f"CIRCLE {secret.ra_deg} {secret.dec_deg} 0.01"
        assert (secret.expnum in sia_ids(client.get("/sia2/query", {"POS": around}))) is entitled, who
        manifest = client.get(f"/api/exposures/manifest/?expnum={secret.expnum}")
        assert (f"/exposures/{secret.pk}/download/" in manifest.content.decode()) is entitled, who

    # Answers to a token are private, even for a public exposure; anonymous ones are not.
    public = secret.__class__.objects.exclude(pk=secret.pk).filter(is_science=True).first()
    assert "private" in pi.get(f"/exposures/{public.pk}/preview.png")["Cache-Control"]
    assert "private" in pi.get("/api/exposures/")["Cache-Control"]
    assert "public" in anonymous.get(f"/exposures/{public.pk}/preview.png")["Cache-Control"]
    assert "Authorization" in anonymous.get("/api/exposures/")["Vary"]


def test_tokens_are_stored_hashed_listed_and_revoked(secret_archive):
    secret, users = secret_archive
    cache.clear()
    first = get_token("pi", name="one").json()
    second = get_token("pi", name="two").json()
    row = AccessToken.objects.get(pk=first["id"])
    assert row.key_hash == hashlib.sha256(first["token"].encode()).hexdigest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM archive_accesstoken")
        assert not any(first["token"] in str(value) for values in cursor.fetchall() for value in values)

    client = as_token(first["token"])
    listed = client.get("/api/tokens/").json()["results"]
    assert {t["name"] for t in listed} == {"one", "two"} and all("token" not in t for t in listed)
    # Revoking the first with itself; the second keeps working.
    assert client.delete("/api/token/").status_code == 204
    refused = client.get(f"/exposures/{secret.pk}/download/")
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Token")
    assert client.get("/api/exposures/").json()["code"] == "invalid_token"
    assert as_token(second["token"]).get(f"/exposures/{secret.pk}/download/").status_code == 200
    # Another user cannot revoke it; its owner can, by id.
    other = as_token(get_token("other").json()["token"])
    assert other.delete(f"/api/tokens/{second['id']}/").status_code == 404
    as_pi = as_token(get_token("pi").json()["token"])
    assert as_pi.delete(f"/api/tokens/{second['id']}/").status_code == 204
    assert as_token(second["token"]).get("/api/exposures/").status_code == 401
    # An inactive user's tokens open nothing.
    users["pi"].is_active = False
    users["pi"].save()
    assert as_pi.get("/api/exposures/").status_code == 401


def test_wrong_passwords_and_bad_input_are_refused_and_rate_limited(secret_archive, monkeypatch):
    cache.clear()
    assert get_token("pi", "wrong").status_code == 401
    assert get_token("nobody").json()["code"] == "invalid_credentials"
    assert get_token("pi\x00").status_code == 400
    assert get_token("pi", name="bell\x07").status_code == 400
    assert Client().post("/api/token/", {"username": "pi"}, content_type="application/json").json()["fields"].keys() \
        == {"password"}
    monkeypatch.setattr(ArchiveThrottle, "THROTTLE_RATES", {**ArchiveThrottle.THROTTLE_RATES, "login": "3/min"})
    cache.clear()
    codes = [get_token("pi", "guess").status_code for _ in range(3)] + [get_token("pi").status_code]
    assert codes == [401, 401, 401, 429]
    # The login page shares the budget: it is refused too, from the same address.
    assert Client().post("/accounts/login/", {"username": "pi", "password": PASSWORD}).status_code == 429
    cache.clear()


def test_a_staff_token_writes_without_a_csrf_token(secret_archive):
    cache.clear()
    token = get_token("staff").json()["token"]
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Token {token}")
    response = client.post("/api/desom2/cells/0/label/", {"label": "Good"}, content_type="application/json")
    assert response.status_code == 201
    assert quality.label_history(0)[0].label == "Good"
    # The same request with the staff's session and no CSRF token is refused.
    session = Client(enforce_csrf_checks=True)
    session.login(username="staff", password=PASSWORD)
    assert session.post("/api/desom2/cells/0/label/", {"label": "BT"},
                        content_type="application/json").status_code == 403
    cache.clear()

"""Throttles count in the shared database cache, per real client: a header the client writes
(X-Forwarded-For) changes nothing unless the peer is a configured trusted proxy, and then only
the address that proxy saw counts. The upload page and the upload API share one budget."""
import io
import ipaddress

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client

from config.middleware import client_address
from config.throttling import ArchiveThrottle

NETWORKS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))


def test_client_address_believes_only_trusted_proxies():
    assert client_address("203.0.113.9", "1.2.3.4", NETWORKS) == "203.0.113.9"        # not a proxy
    assert client_address("127.0.0.1", "198.51.100.7", NETWORKS) == "198.51.100.7"    # our proxy
    # Whatever the client prepends is skipped: the rightmost address no trusted proxy vouches for.
    assert client_address("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3", NETWORKS) == "198.51.100.7"
    assert client_address("127.0.0.1", "garbage, 198.51.100.7", NETWORKS) == "198.51.100.7"
    assert client_address("127.0.0.1", "198.51.100.7, not-an-ip", NETWORKS) == "127.0.0.1"
    assert client_address("127.0.0.1", "[2001:db8::1]:4711", NETWORKS) == "2001:db8::1"
    assert client_address("127.0.0.1", "10.0.0.5, 10.0.0.6", NETWORKS) == "10.0.0.5"


def _upload(client, **headers):
    stamp = io.BytesIO(b"not an image at all")
    stamp.name = "x.png"
    return client.post("/api/search/cutout/?k=1", {"file": stamp}, **headers).status_code


@pytest.fixture
def two_uploads_a_minute(monkeypatch):
    monkeypatch.setattr(ArchiveThrottle, "THROTTLE_RATES", {**ArchiveThrottle.THROTTLE_RATES, "uploads": "2/min"})
    cache.clear()
    yield
    cache.clear()


def test_a_forged_forwarded_header_does_not_reset_the_throttle(populated_archive, two_uploads_a_minute, settings):
    client = Client(REMOTE_ADDR="203.0.113.9")
    codes = [_upload(client, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}") for i in range(4)]
    assert codes == [400, 400, 429, 429]
    # The count lives in the database cache (shared by every worker process), keyed by the peer.
    assert settings.CACHES["default"]["BACKEND"].endswith("DatabaseCache")
    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key FROM archive_cache")
        keys = [row[0] for row in cursor.fetchall()]
    assert any("uploads" in key and "203.0.113.9" in key for key in keys), keys
    assert not any("198.51.100" in key for key in keys)
    # Another client is not affected.
    assert _upload(Client(REMOTE_ADDR="203.0.113.10")) == 400


def test_behind_a_trusted_proxy_each_client_has_its_own_budget(populated_archive, two_uploads_a_minute, settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    proxy = Client(REMOTE_ADDR="127.0.0.1")
    first = [_upload(proxy, HTTP_X_FORWARDED_FOR="198.51.100.1") for _ in range(3)]
    assert first == [400, 400, 429]
    # A client behind the proxy that forges an extra hop is still itself.
    assert _upload(proxy, HTTP_X_FORWARDED_FOR="1.1.1.1, 198.51.100.1") == 429
    assert _upload(proxy, HTTP_X_FORWARDED_FOR="198.51.100.2") == 400
    # IPv6 clients are counted per /64.
    codes = [_upload(proxy, HTTP_X_FORWARDED_FOR=f"2001:db8:1:2::{i}") for i in range(1, 4)]
    assert codes == [400, 400, 429]


def test_the_upload_page_shares_the_api_budget(populated_archive, two_uploads_a_minute):
    client = Client(REMOTE_ADDR="203.0.113.20")
    assert _upload(client) == 400
    stamp = io.BytesIO(b"not an image")
    stamp.name = "x.png"
    assert client.post("/search/upload/", {"kind": "cutout", "k": 3, "file": stamp}).status_code == 400
    stamp.seek(0)
    refused = client.post("/search/upload/", {"kind": "cutout", "k": 3, "file": stamp})
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert _upload(client) == 429


def test_forwarded_proto_from_an_untrusted_peer_is_dropped(populated_archive, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    # A direct client claiming https is still redirected to https: its header was dropped.
    direct = Client(REMOTE_ADDR="203.0.113.9").get("/health/live/", HTTP_X_FORWARDED_PROTO="https")
    assert direct.status_code == 301
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    proxied = Client(REMOTE_ADDR="127.0.0.1").get("/health/live/", HTTP_X_FORWARDED_PROTO="https")
    assert proxied.status_code == 200

"""The upload API and the upload page take one path (recommender.uploads): a file either
surface refuses is refused by the other with the same words. Built from rows, no trained model:
every refusal here comes before a model is used."""
import html
import io

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from archive.models import ModelVersion
from tests import factories

# (page kind, API route, file name, bytes): files the archive refuses to read.
REFUSED = [
    ("cutout", "/api/search/cutout/", "stamp.txt", b"plainly not an image"),
    ("cutout", "/api/search/cutout/", "stamp.npy", b"\x93NUMPY broken header"),
    ("exposure", "/api/search/exposure/", "x.fits", b"hello, not a FITS file"),
]


@pytest.fixture
def desom1_row(db):
    cache.clear()  # the upload throttle's budget is shared through the cache
    return factories.model_version(ModelVersion.DESOM1, rows=3, cols=3)


def named(name, payload):
    upload = io.BytesIO(payload)
    upload.name = name
    return upload


def api_message(route, name, payload) -> str:
    response = APIClient().post(route, {"file": named(name, payload)}, format="multipart")
    assert response.status_code == 400
    return response.json()["fields"]["file"][0]


def page_error(kind, name, payload) -> str:
    response = Client().post("/search/upload/", {"kind": kind, "k": 5, "file": named(name, payload)})
    assert response.status_code == 400
    return html.unescape(response.content.decode())


@pytest.mark.parametrize("kind,route,name,payload", REFUSED)
def test_page_and_api_refuse_a_file_in_the_same_words(desom1_row, kind, route, name, payload):
    message = api_message(route, name, payload)
    assert message
    # The page names an exposure's file before the message; a stamp's message names it already.
    expected = message if kind == "cutout" else f"{name}: {message}"
    assert expected in page_error(kind, name, payload)

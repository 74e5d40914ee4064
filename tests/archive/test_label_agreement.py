"""A quality label means the same on every surface: REST `?label=`, the search page's `label`
and SIA's `QUALITY=` select exactly the exposures whose pre-download verdict carries that label,
including exposures in cells labelled only by their neighbours. Built from rows (tests.factories),
no trained model needed."""
import io
import re

import pytest
from astropy.io.votable import parse
from django.test import Client
from rest_framework.test import APIClient

from archive.models import MIXED_LABEL, Exposure, ModelVersion
from archive.services import quality
from tests import factories

# On a 4x4 map: two expert labels far apart, one cell an expert left mixed, the rest guessed.
EXPERT_LABELS = {0: "BT", 15: "Good", 5: MIXED_LABEL}


@pytest.fixture
def labelled_archive(db):
    desom2 = factories.model_version(ModelVersion.DESOM2, rows=4, cols=4)
    for cell, text in EXPERT_LABELS.items():
        factories.label(cell, text, desom2)
    for cell in range(16):
        factories.assign(factories.exposure(), cell, desom2)
    # A calibration frame never has a label, whatever cell a stray row gives it.
    factories.assign(factories.exposure(is_science=False, obstype="FLAT"), 0, desom2)
    factories.exposure()  # never assigned: no cell, no label
    return desom2


def verdict_members(label: str) -> set[int]:
    verdicts = quality.quality_verdicts(Exposure.objects.all())
    return {v.exposure_id for v in verdicts if (v.label or "").lower() == label.lower()}


def rest_members(label: str) -> set[int]:
    body = APIClient().get("/api/exposures/", {"label": label, "page_size": 500}).json()
    return {row["id"] for row in body["results"]}


def page_members(label: str) -> set[int]:
    html = Client().get("/", {"label": label}).content.decode()
    return {int(pk) for pk in re.findall(r"/exposures/(\d+)/", html)}


def sia_members(label: str) -> set[int]:
    response = Client().get("/sia2/query", {"QUALITY": label})
    table = parse(io.BytesIO(response.content)).get_first_table().to_table()
    expnums = [int(v) for v in table["obs_id"]]
    return set(Exposure.objects.filter(expnum__in=expnums).values_list("pk", flat=True))


@pytest.mark.parametrize("label", ["BT", "good", "RBT"])
def test_rest_page_and_sia_select_the_verdicts_label(labelled_archive, label):
    expected = verdict_members(label)
    assert rest_members(label) == expected
    assert page_members(label) == expected
    assert sia_members(label) == expected


def test_neighbour_guessed_cells_count_on_every_surface(labelled_archive):
    verdicts = quality.quality_verdicts(Exposure.objects.all())
    guessed = {v.exposure_id for v in verdicts if v.label == "BT" and v.label_source == quality.SOURCE_NEIGHBOURS}
    # The fixture is only a test of the rule if some BT exposure got its label from neighbours.
    assert guessed
    assert guessed <= rest_members("BT") and guessed <= sia_members("BT") and guessed <= page_members("BT")
    mixed_cell = next(c for c, text in EXPERT_LABELS.items() if text == MIXED_LABEL)
    assert quality.CellQualityMap.of(labelled_archive).label(mixed_cell)[1] != quality.SOURCE_EXPERT


def test_calibration_frames_match_no_label(labelled_archive):
    flats = set(Exposure.objects.filter(is_science=False).values_list("pk", flat=True))
    assert flats and not flats & rest_members("BT")

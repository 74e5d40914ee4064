"""Cell labels, prototype flags and the pre-download check (issue 7)."""
import numpy as np
import pytest
from rest_framework.test import APIClient

from archive.models import CellAssignment, Exposure, ExposureFlag, PrototypeFlag
from archive.services import quality
from archive.services.training import histo_matrix
from tests import factories


@pytest.fixture
def staff(db):
    return factories.user("expert", staff=True)


@pytest.fixture
def member(db):
    return factories.user("reader")


def busiest_cell(desom2):
    from django.db.models import Count

    return (CellAssignment.objects.filter(model_version=desom2).values("cell").annotate(n=Count("id"))
            .order_by("-n").first()["cell"])


def test_a_cell_label_reaches_members_and_later_arrivals(populated_archive, staff, survey_dir, imaging_config,
                                                        tmp_path, django_capture_on_commit_callbacks):
    import shutil

    from archive.services.assign import assign_cells
    from archive.services.ingest import ingest

    _, desom2 = populated_archive
    cell = busiest_cell(desom2)
    members = list(Exposure.objects.filter(cells__model_version=desom2, cells__cell=cell))
    quality.label_cell(cell, "RBT", user=staff, note="trails everywhere")
    verdicts = quality.quality_verdicts(members)
    assert {v.label for v in verdicts} == {"RBT"} and all(v.label_source == "cell label" for v in verdicts)
    assert all("quality label RBT" in v.warnings[0] for v in verdicts)

    # A later arrival: one member deleted and ingested again lands in the same cell, labelled.
    arrival = members[0]
    path = tmp_path / "again.fits"
    shutil.copy(arrival.file_path, path)
    Exposure.objects.filter(pk=arrival.pk).delete()
    with django_capture_on_commit_callbacks(execute=True):
        ingest([path], workers=0, imaging_config=imaging_config, progress=False)
        assign_cells(progress=False)
    again = Exposure.objects.get(expnum=arrival.expnum)
    assert quality.quality_verdicts([again])[0].label == "RBT"


def test_relabelling_keeps_history_and_mixed_unlabels(archive_rows, staff):
    _, desom2 = archive_rows
    cell = busiest_cell(desom2)
    quality.label_cell(cell, "Good", user=staff)
    quality.label_cell(cell, "bad focus", user=staff)
    assert quality.current_cell_labels(desom2)[cell].label == "bad focus"
    assert [row.label for row in quality.label_history(cell, desom2)] == ["bad focus", "Good"]
    quality.label_cell(cell, "mixed", user=staff)
    member = Exposure.objects.filter(cells__model_version=desom2, cells__cell=cell).first()
    verdict = quality.quality_verdicts([member])[0]
    assert verdict.label is None or verdict.label_source == "neighbouring cells"
    with pytest.raises(quality.QualityError):
        quality.label_cell(10_000, "Good", user=staff)


def test_neighbouring_labels_give_unlabelled_cells_a_guess(archive_rows, staff):
    _, desom2 = archive_rows
    rows, cols = desom2.map_shape
    # Label every cell but the centre one Good: the centre inherits Good with high confidence.
    centre = (rows // 2) * cols + cols // 2
    for cell in range(rows * cols):
        if cell != centre:
            quality.label_cell(cell, "Good", user=staff)
    classes, probabilities = quality.label_probabilities(desom2)
    assert classes == ["Good"]
    assert probabilities[centre, 0] >= quality.MIN_GUESS_CONFIDENCE


def test_flags_follow_their_thresholds(archive_rows, staff):
    desom1, _ = archive_rows
    ids, histos = histo_matrix(desom1)
    shares = histos / histos.sum(axis=1, keepdims=True)
    nodes = [int(np.argmax(shares.mean(axis=0)))]
    in_nodes = shares[:, nodes].sum(axis=1)
    middle = float(np.median(in_nodes))

    flag = quality.save_flag("crowded node", nodes, middle, user=staff)
    carried = set(ExposureFlag.objects.filter(flag=flag).values_list("exposure_id", flat=True))
    assert carried == set(ids[in_nodes >= middle].tolist())
    assert 0 < len(carried) < len(ids)

    quality.save_flag("crowded node", nodes, 1.0, user=staff)  # nobody has all sources there
    assert not ExposureFlag.objects.filter(flag=flag).exists() or in_nodes.max() >= 1.0

    quality.save_flag("crowded node", nodes, 1.5, mode=PrototypeFlag.MODE_EXCESS, user=staff)
    expected = set(ids[in_nodes >= 1.5 * middle].tolist())
    assert set(ExposureFlag.objects.filter(flag=flag).values_list("exposure_id", flat=True)) == expected

    with pytest.raises(quality.QualityError):
        quality.save_flag("bad", [10_000], 0.5)
    with pytest.raises(quality.QualityError):
        quality.save_flag("bad", nodes, 2.0)  # a share above 1


def test_the_pre_download_check_of_a_large_cart_is_a_few_queries(archive_rows, staff,
                                                                 django_assert_max_num_queries):
    desom1, desom2 = archive_rows
    quality.label_cell(busiest_cell(desom2), "BT", user=staff)
    quality.save_flag("any", [0, 1, 2], 0.01, user=staff)
    existing = list(Exposure.objects.values_list("pk", flat=True))
    cart = (existing * (1000 // len(existing) + 1))[:1000]
    client = APIClient()
    with django_assert_max_num_queries(12):
        response = client.post("/api/quality-check/", {"ids": cart + [999_999]}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert len(body["results"]) == len(existing) and body["not_found"] == [999_999]
    flagged = {r["exposure"] for r in body["results"] if r["flags"]}
    assert flagged == set(ExposureFlag.objects.values_list("exposure_id", flat=True))
    assert body["all_ok"] is False


def test_only_staff_label_cells_and_flag_nodes(archive_rows, staff, member):
    _, desom2 = archive_rows
    anonymous, reader, curator = APIClient(), APIClient(), APIClient()
    reader.force_authenticate(member)
    curator.force_authenticate(staff)
    label = {"label": "Good", "note": "clean"}
    flag = {"name": "donuts", "nodes": [1, 2], "threshold": 0.3}
    assert anonymous.post("/api/desom2/cells/0/label/", label, format="json").status_code in (401, 403)
    assert reader.post("/api/desom2/cells/0/label/", label, format="json").status_code == 403
    assert anonymous.post("/api/flags/", flag, format="json").status_code in (401, 403)
    assert reader.post("/api/flags/", flag, format="json").status_code == 403
    assert curator.post("/api/desom2/cells/0/label/", label, format="json").status_code == 201
    created = curator.post("/api/flags/", flag, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["nodes"] == [1, 2]
    assert curator.post("/api/flags/", {**flag, "nodes": [99999]}, format="json").status_code == 400
    assert anonymous.get("/api/flags/").json()["results"][0]["name"] == "donuts"
    assert quality.current_cell_labels(desom2)[0].labelled_by == staff

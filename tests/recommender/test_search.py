"""Search over the archive: find-similar, by prototypes, by cutout and by uploaded exposure;
indexes that survive restarts, notice staleness and follow adds and deletes."""
import io
from collections import Counter

import numpy as np
import pytest
from rest_framework.test import APIClient

from archive.models import Exposure
from archive.services.exposures import delete_exposures
from recommender import services


def truth_kinds(survey_dir) -> dict[int, str]:
    import csv

    with open(survey_dir / "truth.csv") as handle:
        return {int(r["expnum"]): r["kind"] for r in csv.DictReader(handle)}


def test_find_similar_returns_mostly_the_same_kind(populated_archive, survey_dir):
    """precision@5 of the same simulated kind over every exposure, beside picking at random.
    The test survey holds four kinds at visible severities (8 exposures each, chance 7/31 =
    0.23); a DESOM-1 that sees sources at all must put most neighbours in the same kind, so the
    floor is "mostly" (0.6). Measured 0.81 with this fixture when it was written."""
    kinds = truth_kinds(survey_dir)
    science = list(Exposure.objects.filter(is_science=True))
    counts = Counter(kinds[e.expnum] for e in science)
    hits, chance = [], []
    for exposure in science:
        matches = services.similar(exposure, k=5)
        assert len(matches) == 5 and exposure.pk not in {m.exposure.pk for m in matches}
        assert [m.score for m in matches] == sorted(m.score for m in matches)
        own = kinds[exposure.expnum]
        hits.append(np.mean([kinds[m.exposure.expnum] == own for m in matches]))
        chance.append((counts[own] - 1) / (len(science) - 1))
    assert np.mean(hits) >= 0.6, (np.mean(hits), np.mean(chance))
    assert np.mean(hits) >= 2 * np.mean(chance)


def test_by_prototypes_ranks_by_share_in_the_nodes(populated_archive):
    from archive.services.training import histo_matrix

    desom1, _ = populated_archive
    ids, histos = histo_matrix(desom1)
    shares = histos / histos.sum(axis=1, keepdims=True)
    node = int(np.argmax(shares.std(axis=0)))
    matches = services.by_prototypes([node], k=5)
    best = ids[np.argsort(-shares[:, node])[:5]]
    # Soft activations spread each source a little, so the top is compared as a set, loosely.
    assert len({m.exposure.pk for m in matches} & set(best.tolist())) >= 3
    assert matches[0].details["share_in_nodes"] == pytest.approx(shares[ids.tolist().index(matches[0].exposure.pk), node], abs=1e-4)
    with pytest.raises(services.SearchError):
        services.by_prototypes([10_000], k=5)
    with pytest.raises(services.SearchError):
        services.by_prototypes("3:-1", k=5)


def test_index_survives_a_restart_and_rebuilds_when_stale(populated_archive, survey_dir):
    first = services.get_index(services.HISTO)
    services.flush_indexes()
    services.reset_store()
    again = services.get_index(services.HISTO)
    assert services.store().rebuilds == 0 and len(again) == len(first)

    # Rows removed behind the recommender's back (no signal): the index no longer matches the DB.
    victim = Exposure.objects.filter(is_science=True).first()
    Exposure.objects.filter(pk=victim.pk).delete()
    services.reset_store()
    rebuilt = services.get_index(services.HISTO)
    assert services.store().rebuilds == 1 and victim.pk not in rebuilt


def test_a_corrupt_index_file_is_rebuilt(populated_archive):
    index = services.get_index(services.HISTO)
    services.flush_indexes()
    path = services.store().path_for(index.model_version, index.kind)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    services.reset_store()
    again = services.get_index(services.HISTO)
    assert services.store().rebuilds == 1 and len(again) == len(index)


def test_add_and_delete_keep_db_and_index_in_step(populated_archive, django_capture_on_commit_callbacks):
    index = services.get_index(services.HISTO)
    gone = list(Exposure.objects.filter(is_science=True).values_list("pk", flat=True)[:3])
    with django_capture_on_commit_callbacks(execute=True):
        assert delete_exposures(gone) == 3
    index = services.get_index(services.HISTO)
    assert not any(pk in index for pk in gone)
    assert not index.is_stale(index.model_version, services.expected_ids(populated_archive[0]))
    survivor = Exposure.objects.filter(is_science=True).first()
    assert not {m.exposure.pk for m in services.similar(survivor, k=10)} & set(gone)


def test_search_api_and_bad_uploads(populated_archive, survey_dir):
    client = APIClient()
    exposure = Exposure.objects.filter(is_science=True).first()
    similar = client.get(f"/api/exposures/{exposure.pk}/similar/?k=3")
    assert similar.status_code == 200 and similar.json()["count"] == 3
    assert client.get(f"/api/exposures/{exposure.pk}/similar/?k=0").status_code == 400
    assert client.get(f"/api/exposures/{exposure.pk}/similar/?k=abc").status_code == 400
    assert client.get(f"/api/exposures/{exposure.pk}/similar/?index=nope").status_code == 400
    assert client.get("/api/exposures/99999999/similar/").status_code == 404
    assert client.get("/api/search/prototypes/?nodes=1,2:0.5&k=4").json()["count"] == 4
    assert client.get("/api/search/prototypes/?nodes=x").status_code == 400

    stamp = io.BytesIO()
    yy, xx = np.mgrid[:32, :32]
    np.save(stamp, np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 8.0).astype(np.float32))
    stamp.seek(0)
    stamp.name = "star.npy"
    found = client.post("/api/search/cutout/?k=3", {"file": stamp}, format="multipart")
    assert found.status_code == 200, found.content
    n_nodes = populated_archive[0].map_shape[0] * populated_archive[0].map_shape[1]
    assert found.json()["count"] == 3 and 0 <= found.json()["cutout"]["bmu"] < n_nodes

    wrong = io.BytesIO()
    np.save(wrong, np.zeros((16, 16), np.float32))
    wrong.seek(0)
    wrong.name = "small.npy"
    response = client.post("/api/search/cutout/", {"file": wrong}, format="multipart")
    assert response.status_code == 400 and "32x32" in str(response.json())
    text = io.BytesIO(b"hello, not an image")
    text.name = "notes.txt"
    assert client.post("/api/search/cutout/", {"file": text}, format="multipart").status_code == 400
    big = io.BytesIO(b"\0" * (600 * 1024))
    big.name = "big.npy"
    response = client.post("/api/search/cutout/", {"file": big}, format="multipart")
    assert response.status_code == 413 and "at most" in str(response.json())
    not_fits = io.BytesIO(b"PK\x03\x04 zip file")
    not_fits.name = "exposure.fits"
    response = client.post("/api/search/exposure/", {"file": not_fits}, format="multipart")
    assert response.status_code == 400 and "not a FITS" in str(response.json())


def test_an_uploaded_exposure_placed_by_desom2_finds_its_twin(populated_archive, science_files):
    """Placed by the active DESOM-2 as assign placed its archived copy (the same imaging, the same
    seven statistics): its latent code's nearest is the twin, and it lands in the twin's cell."""
    from archive.models import CellAssignment, ModelVersion

    client = APIClient()
    path = science_files[0]
    twin = Exposure.objects.get(file_path=str(path.resolve()))
    with open(path, "rb") as handle:
        response = client.post("/api/search/exposure/?k=3&index=desom2", {"file": handle}, format="multipart")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["results"][0]["id"] == twin.pk and body["results"][0]["score"] == pytest.approx(0.0, abs=1e-3)
    assert body["results"][0]["reason"].startswith("distance in DESOM-2's latent space")
    assert body["upload"]["index"] == "desom2"
    assert body["upload"]["desom2_cell"] == CellAssignment.objects.get(exposure=twin,
                                                                      model_version=populated_archive[1]).cell
    for bad in ("activation", "nope"):   # refused before the file is read
        with open(path, "rb") as handle:
            refused = client.post(f"/api/search/exposure/?index={bad}", {"file": handle}, format="multipart")
        assert refused.status_code == 400 and "histo or desom2" in str(refused.json())
    ModelVersion.objects.filter(pk=populated_archive[1].pk).update(is_active=False)
    with open(path, "rb") as handle:
        refused = client.post("/api/search/exposure/?index=desom2", {"file": handle}, format="multipart")
    assert refused.status_code == 400 and "active DESOM-2" in str(refused.json())
    assert services.upload_index(None) is services.HISTO      # the page's default falls back


def test_search_by_an_uploaded_exposure_finds_its_twin(populated_archive, science_files):
    client = APIClient()
    path = science_files[0]
    with open(path, "rb") as handle:
        response = client.post("/api/search/exposure/?k=1", {"file": handle}, format="multipart")
    assert response.status_code == 200, response.content
    twin = Exposure.objects.get(file_path=str(path.resolve()))
    top = response.json()["results"][0]
    assert top["id"] == twin.pk and top["score"] == pytest.approx(0.0, abs=1e-3)

"""The "desom2" index: find-similar in the active DESOM-2's latent space, keyed by the DESOM-2
version, fed by the cell assignments' latent codes and kept in step with assign and delete."""
import numpy as np
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from archive import vectors
from archive.models import CellAssignment, Exposure, ModelVersion
from recommender import services
from tests import factories

LATENT_DIM = 4


@pytest.fixture
def latent_archive(db, settings, tmp_path):
    """An active 5x5 DESOM-1 and 3x3 DESOM-2, 30 public exposures with histo-vectors and seeded
    latent codes (three well-apart groups of ten), and one exposure assigned a cell before
    latent codes were stored. Returns (desom1, desom2, exposures with latents, latents)."""
    settings.ARCHIVE_DATA_DIR = tmp_path / "data"
    desom1 = factories.model_version(ModelVersion.DESOM1, rows=5, cols=5)
    desom2 = factories.model_version(ModelVersion.DESOM2, rows=3, cols=3, trained_on=desom1)
    rng = np.random.default_rng(11)
    centres = rng.normal(0, 5.0, (3, LATENT_DIM))
    latents = (np.repeat(centres, 10, axis=0) + rng.normal(0, 0.5, (30, LATENT_DIM))).astype(np.float32)
    exposures = []
    for i, z in enumerate(latents):
        row = factories.exposure()
        factories.vector(row, desom1, rng.poisson(3.0, 25))
        factories.assign(row, i // 10, desom2, latent=z)
        exposures.append(row)
    old = factories.exposure()
    factories.vector(old, desom1, rng.poisson(3.0, 25))
    factories.assign(old, 0, desom2)
    services.reset_store()
    yield desom1, desom2, exposures, latents
    services.reset_store()


def brute_force_nearest(latents, query: int, k: int):
    d = np.linalg.norm(latents - latents[query], axis=1)
    d[query] = np.inf
    order = np.argsort(d, kind="stable")[:k]
    return order, d[order]


def test_similar_in_desom2_space_is_the_exact_latent_neighbourhood(latent_archive):
    _, desom2, exposures, latents = latent_archive
    for query in (0, 17, 29):
        matches = services.similar(exposures[query], k=6, index="desom2")
        order, distances = brute_force_nearest(latents, query, 6)
        assert [m.exposure.pk for m in matches] == [exposures[i].pk for i in order]
        assert [m.score for m in matches] == pytest.approx(distances.tolist(), rel=1e-4, abs=1e-4)
        assert matches[0].reason.startswith("distance in DESOM-2's latent space")
    index = services.get_index("desom2")
    assert index.model_version == desom2.version_id and len(index) == len(exposures)   # no latent, not indexed


def test_an_exposure_without_a_latent_code_and_an_archive_without_desom2_are_told_why(latent_archive):
    desom1, desom2, exposures, _ = latent_archive
    old = Exposure.objects.exclude(pk__in=[e.pk for e in exposures]).get(is_science=True)
    with pytest.raises(services.SearchError, match="no vector under the active DESOM-2.*assign"):
        services.similar(old, k=3, index="desom2")
    assert len(services.similar(old, k=3)) == 3          # the histo index still answers for it

    ModelVersion.objects.filter(pk=desom2.pk).update(is_active=False)
    services.reset_store()
    client = APIClient()
    refused = client.get(f"/api/exposures/{exposures[0].pk}/similar/?index=desom2")
    assert refused.status_code == 400 and "active DESOM-2" in refused.json()["detail"]
    assert client.get(f"/api/exposures/{exposures[0].pk}/similar/?k=3").status_code == 200
    assert "desom2" not in services.active_index_versions()
    call_command("build_index", verbosity=0)
    assert services.index_readiness()["missing"] is None   # no DESOM-2, no desom2 file expected


def test_api_command_and_readiness_serve_the_desom2_index(latent_archive, capsys):
    _, desom2, exposures, latents = latent_archive
    assert services.index_readiness()["missing"] == ["histo", "activation", "desom2"]
    call_command("build_index", verbosity=1)
    out = capsys.readouterr().out
    assert f"desom2 index of DESOM-2 {desom2.version_id}: {len(exposures)} exposures" in out
    assert services.index_readiness()["missing"] is None

    response = APIClient().get(f"/api/exposures/{exposures[3].pk}/similar/?index=desom2&k=4")
    assert response.status_code == 200, response.content
    order, _ = brute_force_nearest(latents, 3, 4)
    assert [m["id"] for m in response.json()["results"]] == [exposures[i].pk for i in order]


def test_the_index_follows_new_cells_recomputed_cells_and_deletes(latent_archive, django_capture_on_commit_callbacks):
    from archive.services.exposures import delete_exposures
    from archive.signals import vectors_changed

    _, desom2, exposures, latents = latent_archive
    assert len(services.get_index("desom2")) == len(exposures)
    builds = services.store().rebuilds

    # a new exposure placed by DESOM-2 (as assign_cells announces a committed page of cells)
    newcomer = factories.exposure()
    factories.assign(newcomer, 4, desom2, latent=latents[5] + 0.01)
    with django_capture_on_commit_callbacks(execute=True):
        vectors_changed.send(sender=None, exposure_ids=[newcomer.pk], model_version=desom2)
    assert newcomer.pk in services.get_index("desom2")
    assert services.similar(exposures[5], k=1, index="desom2")[0].exposure.pk == newcomer.pk

    # a recomputed latent code replaces the old one
    moved = latents[25] + 0.01
    CellAssignment.objects.filter(exposure=exposures[0], model_version=desom2).update(latent=vectors.to_blob(moved))
    vectors_changed.send(sender=None, exposure_ids=[exposures[0].pk], model_version=desom2)
    assert services.similar(exposures[25], k=1, index="desom2")[0].exposure.pk == exposures[0].pk
    assert services.store().rebuilds == builds                # followed in place, never rebuilt
    assert len(services.get_index("desom2")) == len(exposures) + 1

    # a deleted exposure leaves it
    with django_capture_on_commit_callbacks(execute=True):
        delete_exposures([exposures[25].pk])
    assert exposures[25].pk not in services.get_index("desom2")
    assert exposures[25].pk not in {m.exposure.pk for m in services.similar(exposures[0], k=10, index="desom2")}

    # "changed, ids unknown": the version's indexes are dropped and rebuilt from the database
    vectors_changed.send(sender=None, exposure_ids=None, model_version=desom2)
    assert services.store().peek(desom2.version_id, "desom2") is None
    assert len(services.get_index("desom2")) == len(exposures)     # +1 newcomer, -1 deleted
    assert services.store().rebuilds == builds + 1


def test_assign_cells_feeds_the_loaded_index(populated_archive, django_capture_on_commit_callbacks):
    """Through the real DESOM-2: the latent codes assign_cells writes are what the index holds."""
    from archive.services.assign import assign_cells

    _, desom2 = populated_archive
    services.get_index("desom2")
    rows = CellAssignment.objects.filter(model_version=desom2).order_by("exposure_id")
    first = rows.first()
    services.store().remove(desom2.version_id, "desom2", [first.exposure_id])
    first.delete()
    assert first.exposure_id not in services.get_index("desom2")
    builds = services.store().rebuilds
    with django_capture_on_commit_callbacks(execute=True):
        assert assign_cells(progress=False) == 1
    index = services.get_index("desom2")
    assert first.exposure_id in index and services.store().rebuilds == builds
    stored = vectors.from_blob(CellAssignment.objects.get(model_version=desom2, exposure_id=first.exposure_id).latent)
    matches = services.similar(Exposure.objects.get(pk=first.exposure_id), k=3, index="desom2")
    others = dict(CellAssignment.objects.filter(model_version=desom2).values_list("exposure_id", "latent"))
    distances = {pk: float(np.linalg.norm(vectors.from_blob(z) - stored)) for pk, z in others.items()
                 if pk != first.exposure_id}
    assert [m.exposure.pk for m in matches] == sorted(distances, key=distances.get)[:3]

"""Exposure.desom2_cell, the exposures' copy of their cell under the active DESOM-2 that the
quality-label filter reads: it follows cell assignment and the activation of a DESOM-2 (a new
one and an older one again), is NULL wherever the active version gave no cell, and migration
0007 fills it for an existing archive and goes back and forth."""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from archive.models import CellAssignment, Exposure, ModelVersion
from archive.services import quality, versions
from tests import factories


def copied() -> dict[int, int | None]:
    return dict(Exposure.objects.values_list("pk", "desom2_cell"))


def assigned(desom2) -> dict[int, int | None]:
    """What the copy must hold under `desom2`: its cell, else NULL."""
    cells = dict(CellAssignment.objects.filter(model_version=desom2).values_list("exposure_id", "cell"))
    return {pk: cells.get(pk) for pk in Exposure.objects.values_list("pk", flat=True)}


def test_activation_copies_the_versions_cells_and_an_older_version_comes_back(db):
    first = factories.model_version(ModelVersion.DESOM2, rows=2, cols=2)
    second = factories.model_version(ModelVersion.DESOM2, rows=2, cols=2, active=False)
    a, b, c, never = (factories.exposure() for _ in range(4))
    factories.assign(a, 0, first)
    factories.assign(b, 1, first)
    # Rows under the inactive version are not copied until it is activated.
    CellAssignment.objects.create(exposure=a, model_version=second, cell=3)
    CellAssignment.objects.create(exposure=c, model_version=second, cell=2)
    assert copied() == {a.pk: 0, b.pk: 1, c.pk: None, never.pk: None}

    versions.activate_version(second)
    assert copied() == assigned(second) == {a.pk: 3, b.pk: None, c.pk: 2, never.pk: None}

    first.refresh_from_db()
    versions.activate_version(first)
    assert copied() == assigned(first) == {a.pk: 0, b.pk: 1, c.pk: None, never.pk: None}
    # Nothing to change: a second copy writes no row.
    first.refresh_from_db()
    assert versions.copy_active_cells(first) == 0

    # The label filter reads the copy and answers as the verdicts (which read the assignments).
    factories.label(0, "BT", first)
    factories.label(3, "Good", first)
    verdicts = {v.exposure_id for v in quality.quality_verdicts(Exposure.objects.all()) if v.label == "BT"}
    labelled = quality.filter_by_quality_label(Exposure.objects.all(), ["bt"], first)
    assert a.pk in verdicts and set(labelled.values_list("pk", flat=True)) == verdicts


def test_only_the_active_desom2_is_copied(db):
    inactive = factories.model_version(ModelVersion.DESOM2, active=False)
    with pytest.raises(ValueError, match="not the active DESOM-2"):
        versions.copy_active_cells(inactive)


@pytest.mark.django_db
def test_assignment_and_activation_keep_the_copy_with_real_models(populated_archive, checkpoints):
    import torch

    from archive.services.assign import assign_cells
    from desom.checkpoint import load_checkpoint, save_checkpoint

    desom1, desom2 = populated_archive
    assert copied() == assigned(desom2)
    assert not Exposure.objects.filter(is_science=False, desom2_cell__isnull=False).exists()
    assert Exposure.objects.filter(is_science=True, desom2_cell__isnull=False).exists()

    # Another DESOM-2 on the same DESOM-1 with its prototypes in reverse order: other cells.
    other = load_checkpoint(checkpoints["desom2"])
    with torch.no_grad():
        other.model.som.prototypes.copy_(other.model.som.prototypes.flip(0))
    path = versions.models_dir() / "desom2-reversed.pt"
    save_checkpoint(path, other.model, other.config, normaliser=other.normaliser)
    reversed2 = versions.register_version(path, kind=ModelVersion.DESOM2, trained_on=desom1)
    assert versions.active_version(ModelVersion.DESOM2) == reversed2
    # Activated before any cell was assigned under it: no exposure has a cell.
    assert set(copied().values()) == {None}

    assert assign_cells(chunk=5, progress=False) > 0
    assert copied() == assigned(reversed2) != assigned(desom2)

    desom2.refresh_from_db()
    versions.activate_version(desom2)                    # the older version again
    assert copied() == assigned(desom2)
    # Recomputing the cells of a version that is not active leaves the copy alone.
    CellAssignment.objects.filter(model_version=reversed2).delete()
    assign_cells(desom2=reversed2, chunk=4, progress=False)
    assert copied() == assigned(desom2)
    # Recomputing the active version's cells keeps the copy with them.
    Exposure.objects.update(desom2_cell=None)
    assign_cells(desom2=desom2, chunk=4, recompute=True, progress=False)
    assert copied() == assigned(desom2)


# --- migration 0007 ---------------------------------------------------------------------------

def this_migration() -> tuple[list, list]:
    """(the migrations before it, itself) as migration targets, found by name so that the test
    follows a renumbering."""
    loader = MigrationExecutor(connection).loader
    loader.build_graph()
    key = next(k for k in loader.graph.nodes if k[0] == "archive" and k[1].endswith("_exposure_desom2_cell"))
    return sorted(parent.key for parent in loader.graph.node_map[key].parents), [key]


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)


def latest():
    loader = MigrationExecutor(connection).loader
    loader.build_graph()
    return loader.graph.leaf_nodes("archive")


def schema() -> tuple[bool, bool]:
    """(the column exists, its index exists)."""
    with connection.cursor() as cursor:
        columns = {c.name for c in connection.introspection.get_table_description(cursor, "archive_exposure")}
        indexes = connection.introspection.get_constraints(cursor, "archive_exposure")
    return "desom2_cell" in columns, "exposure_desom2_cell_visible" in indexes


@pytest.mark.django_db(transaction=True)
def test_migration_fills_the_copy_and_goes_back_and_forth():
    active = factories.model_version(ModelVersion.DESOM2, rows=2, cols=2)
    older = factories.model_version(ModelVersion.DESOM2, rows=2, cols=2, active=False)
    rows = [factories.exposure() for _ in range(4)]
    factories.assign(rows[0], 2, active)
    factories.assign(rows[1], 3, active)
    CellAssignment.objects.create(exposure=rows[1], model_version=older, cell=0)
    CellAssignment.objects.create(exposure=rows[2], model_version=older, cell=1)
    expected = assigned(active)
    assert expected == {rows[0].pk: 2, rows[1].pk: 3, rows[2].pk: None, rows[3].pk: None}
    assert schema() == (True, True)
    before, after = this_migration()
    try:
        migrate(before)
        assert schema() == (False, False)
        migrate(after)        # the backfill: what the copy holds on an archive that never had it
        assert schema() == (True, True)
        assert copied() == expected
        migrate(before)
        assert schema() == (False, False)
    finally:
        migrate(latest())
    assert copied() == expected

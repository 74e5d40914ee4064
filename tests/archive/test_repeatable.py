"""The demo's promise: the same files and seeds give the same maps and cells, whatever the number
of workers and whichever finishes first (the first study's demo printed 0.654 where the README
said 0.800: training sets followed the workers' finishing order, DESOM-2's rows the database ids)."""
import pytest

from archive.models import CellAssignment, Exposure, IngestRun, ModelVersion

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow,
              pytest.mark.usefixtures("one_torch_thread")]

TINY_DESOM1 = dict(map_rows=4, map_cols=4, iterations=30, batch_size=32, conv_filters=[4, 8, 8],
                   dense_units=32, latent_dim=8)
TINY_DESOM2 = dict(map_rows=2, map_cols=2, iterations=40, batch_size=8)




def _run(survey_dir, workers):
    from archive.services.assign import assign_cells
    from archive.services.ingest import ingest
    from archive.services.training import train_desom1, train_desom2
    from archive.services.versions import load_checkpoint_for
    from desom.checkpoint import weights_hash

    desom1 = train_desom1(paths=[str(survey_dir)], overrides=TINY_DESOM1, max_cutouts=3000, seed=4,
                          workers=workers, progress=False, order_gate=False)
    ingest([survey_dir], workers=workers, progress=False)
    desom2 = train_desom2(overrides=TINY_DESOM2, seed=4, progress=False)
    assign_cells(progress=False)
    cells = dict(CellAssignment.objects.filter(model_version=desom2).values_list("exposure__expnum", "cell"))
    return weights_hash(load_checkpoint_for(desom1).model), weights_hash(load_checkpoint_for(desom2).model), cells


def test_the_same_files_train_the_same_maps_and_cells_with_one_or_two_workers(survey_dir, settings, tmp_path):
    settings.ARCHIVE_DATA_DIR = str(tmp_path / "first")
    first = _run(survey_dir, workers=0)
    for model in (CellAssignment, Exposure, IngestRun):
        model.objects.all().delete()
    ModelVersion.objects.filter(kind=ModelVersion.DESOM2).delete()   # DESOM-2s protect their DESOM-1
    ModelVersion.objects.all().delete()
    settings.ARCHIVE_DATA_DIR = str(tmp_path / "second")
    second = _run(survey_dir, workers=2)
    assert len(first[2]) == Exposure.objects.filter(is_science=True).count() > 0
    assert first[0] == second[0], "DESOM-1 weights differ"
    assert first[1] == second[1], "DESOM-2 weights differ"
    assert first[2] == second[2]

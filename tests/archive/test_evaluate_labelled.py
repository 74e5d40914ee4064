"""`evaluate --labelled`: the cells named by a given sample (the one a `train_desom2 --labels`
run chose its map with), so that none of its exposures is scored."""
import csv
import io
import json

import pytest

pytestmark = pytest.mark.django_db


def test_the_given_sample_names_the_cells_and_is_never_scored(populated_archive, survey_dir, tmp_path):
    from django.core.management import call_command

    with open(survey_dir / "truth.csv") as handle:
        science = [r for r in csv.DictReader(handle) if r["good_bad"] in ("Good", "Bad")]
    sample = science[::3]
    labels = tmp_path / "sample.csv"
    labels.write_text("expnum,good_bad\n" + "".join(f"{r['expnum']},{r['good_bad']}\n" for r in sample))
    out = tmp_path / "evaluation.json"
    call_command("evaluate", truth=str(survey_dir / "truth.csv"), labelled=str(labels), bootstrap=20,
                 json_out=str(out), stdout=io.StringIO())
    held = json.loads(out.read_text())["heldout"]
    assert held["n_labelled"] == len(sample)
    assert held["n_heldout"] == len(science) - len(sample)


def test_a_sample_that_leaves_nothing_to_score_or_cannot_be_read_is_refused(populated_archive, survey_dir, tmp_path):
    from django.core.management import CommandError, call_command

    everything = tmp_path / "all.csv"
    with open(survey_dir / "truth.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r["good_bad"] in ("Good", "Bad")]
    everything.write_text("expnum,label\n" + "".join(f"{r['expnum']},{r['good_bad']}\n" for r in rows))
    with pytest.raises(CommandError, match="none is left to score"):
        call_command("evaluate", truth=str(survey_dir / "truth.csv"), labelled=str(everything), bootstrap=20)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,quality\nx,Good\n")
    with pytest.raises(CommandError, match="needs an 'expnum' column"):
        call_command("evaluate", truth=str(survey_dir / "truth.csv"), labelled=str(bad), bootstrap=20)

"""The science study's own rules that decide what it compares (benchmarks/science_models.py)."""
import pytest

from benchmarks import bench_science
from benchmarks.science_models import RECIPES, desom1_settings, desom1_variant


def test_a_variant_without_a_length_trains_at_the_study_default():
    assert desom1_variant("asinh", 3000) == ("asinh", 3000)


def test_a_variant_names_its_own_training_length():
    recipe, iterations = desom1_variant("asinh@9000", 3000)
    assert (recipe, iterations) == ("asinh", 9000)
    settings = desom1_settings(iterations, precision="float32")
    # the learning rate still settles over the last third of the longer run
    assert settings["iterations"] == 9000 and settings["lr_decay_iterations"] == 3000


@pytest.mark.parametrize("name", ["asinh@0", "asinh@-5", "asinh@9k", "asinh@", "nosuch", "nosuch@3000"])
def test_a_malformed_variant_is_refused_with_its_name(name):
    with pytest.raises(ValueError, match="asinh|nosuch"):
        desom1_variant(name, 3000)


def test_every_recipe_is_a_variant():
    assert {desom1_variant(r, 10)[0] for r in RECIPES} == set(RECIPES)


def test_every_recipe_is_a_stamp_recipe_the_archive_can_cut():
    from desom.pipeline import ImagingConfig

    for name, recipe in RECIPES.items():
        cut = ImagingConfig().with_stamps(recipe).stamp_recipe()
        assert {k: cut[k] for k in recipe} == recipe, name


def test_the_margin_over_the_baseline_is_desom_minus_baseline_whatever_the_key_order():
    # differences are stored under alphabetical keys: "baseline-desom" is baseline minus desom
    scores = {"differences": {"baseline-desom": {"accuracy": -0.09, "ci95": [-0.12, -0.06]}}}
    margin, ci = bench_science.desom_margin(scores)
    assert margin == pytest.approx(0.09)
    assert ci == pytest.approx([0.06, 0.12])
    assert bench_science.desom_margin({"differences": {}})[1] is None


def test_a_validation_only_run_never_writes_over_the_test_runs_figures():
    default = bench_science.parse_args([]).out
    assert bench_science.parse_args(["--validation-only"]).out != default
    assert bench_science.parse_args(["--validation-only", "--out", "x.json"]).out == "x.json"

"""The science study's own rules that decide what it compares (benchmarks/science_models.py)."""
import pytest

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

"""label_probabilities keeps its result per process (every list page, label filter and verdict
asks again): the kept answer must be the one a fresh computation gives, follow a relabel at
once, and be safe to share."""
import numpy as np
import pytest

from archive.models import ModelVersion
from archive.services import quality
from tests import factories


def fresh(desom2):
    rows, cols = desom2.map_shape
    labels = quality.current_cell_labels(desom2)
    named = {c: quality.effective_label(r) for c, r in labels.items() if quality.effective_label(r)}
    return quality._label_probabilities(rows, cols, 1.5, named)


@pytest.mark.django_db
def test_cached_probabilities_match_a_fresh_computation_and_follow_relabels():
    desom2 = factories.model_version(ModelVersion.DESOM2, rows=5, cols=5)
    factories.label(0, "BT", desom2)
    factories.label(24, "Good", desom2)
    first = quality.label_probabilities(desom2)
    again = quality.label_probabilities(desom2)
    expected = fresh(desom2)
    assert first[0] == again[0] == expected[0]
    np.testing.assert_array_equal(first[1], expected[1])
    assert again[1] is first[1]                     # kept, not recomputed
    with pytest.raises(ValueError):
        first[1][0, 0] = 0.5                         # shared: nobody may change it in place
    first[0].append("not kept")                      # the class list handed out is a copy
    assert quality.label_probabilities(desom2)[0] == expected[0]

    factories.label(24, "RBT", desom2)               # a relabel is seen at once
    relabelled = quality.label_probabilities(desom2)
    assert relabelled[0] == fresh(desom2)[0] == ["BT", "RBT"]
    np.testing.assert_array_equal(relabelled[1], fresh(desom2)[1])
    assert quality.CellQualityMap.of(desom2).label(23)[0] == "RBT"

    other = factories.model_version(ModelVersion.DESOM2, rows=3, cols=3, active=False)
    factories.label(0, "BT", other)
    assert quality.label_probabilities(other)[1].shape == (9, 1)   # another map shape, another entry

"""A test split is looked at once: the ledger records every scoring and refuses a second look
under a changed configuration unless a reason is given."""
import json

import pytest

from desom.errors import UserError
from desom.ledger import HeldOutLedger, SplitAlreadyScored, fingerprint


def test_first_look_then_repeat_then_refusal_then_reason(tmp_path):
    ledger = HeldOutLedger(tmp_path / "ledger.json")
    first = ledger.record("split-a", {"k": 1}, {"accuracy": 0.9})
    assert first["look"] == 1 and not first["repeat"] and first["reason"] is None
    again = ledger.record("split-a", {"k": 1}, {"accuracy": 0.9})
    assert again["look"] == 2 and again["repeat"]
    with pytest.raises(SplitAlreadyScored, match="already scored 2 time"):
        ledger.record("split-a", {"k": 2}, {"accuracy": 0.95})
    assert len(ledger.entries()) == 2                # nothing written by a refusal
    with pytest.raises(SplitAlreadyScored):
        ledger.check("split-a", {"k": 2}, reason="   ")
    third = ledger.record("split-a", {"k": 2}, {"accuracy": 0.95}, reason="the survey's PSF changed")
    assert third["look"] == 3 and third["reason"] == "the survey's PSF changed"
    # another split is a first look; every scoring stays, in order
    assert ledger.record("split-b", {"k": 2}, {"accuracy": 0.8})["look"] == 1
    stored = json.loads((tmp_path / "ledger.json").read_text())
    assert [e["look"] for e in stored] == [1, 2, 3, 1]
    assert [e["figures"]["accuracy"] for e in stored] == [0.9, 0.9, 0.95, 0.8]
    assert issubclass(SplitAlreadyScored, UserError)


def test_fingerprints_are_stable_and_order_free():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_a_damaged_ledger_is_not_overwritten(tmp_path):
    path = tmp_path / "ledger.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        HeldOutLedger(path).record("s", {}, {})
    assert path.read_text() == "{not json"

"""A test split is looked at once: the record of every scoring of a held-out split.

A study that chooses its settings on validation and then scores its test split can still be
flattered by its test split, one look at a time: change a default after a miss, score again,
keep the better run. The ledger makes the looks visible and the second one deliberate:

- every scoring of a test split is appended to a JSON file kept beside the results, in order:
  when, the split's fingerprint (which exposures), the configuration's fingerprint and the
  configuration itself, the figures, and the reason when it is not the first look;
- scoring a split that was already scored under another configuration is refused
  (``SplitAlreadyScored``) unless a reason is given, and the reason is stored with the entry;
- scoring it again under the *same* configuration is allowed (a rerun that repeats the figures)
  and recorded as a repeat.

Pure Python and numpy: a notebook or a batch job can keep the same discipline.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from desom.errors import UserError


class SplitAlreadyScored(UserError):
    """The test split was scored before under another configuration, and no reason was given."""


def fingerprint(obj) -> str:
    """A short stable hash of a JSON-able object (numpy arrays as lists)."""
    def default(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (np.integer, np.floating)):
            return o.item()
        return str(o)

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=default).encode()).hexdigest()[:16]


class HeldOutLedger:
    """The scorings of held-out splits, kept in one JSON file (a list of entries, in order)."""

    def __init__(self, path):
        self.path = Path(path)

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        try:
            entries = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"the test ledger {self.path} is not valid JSON ({exc}); it must be mended, "
                             "not overwritten") from None
        if not isinstance(entries, list):
            raise ValueError(f"the test ledger {self.path} must hold a list of entries")
        return entries

    def scorings_of(self, split_id: str) -> list[dict]:
        return [e for e in self.entries() if e.get("split") == split_id]

    def check(self, split_id: str, configuration: dict, reason: str | None = None) -> dict:
        """Whether this configuration may score the split: returns what the entry will say
        (``look``: 1 for the first look; ``repeat``: True when the same configuration scored it
        before). Raises SplitAlreadyScored for a changed configuration without a reason."""
        config_id = fingerprint(configuration)
        seen = self.scorings_of(split_id)
        repeat = any(e.get("configuration_id") == config_id for e in seen)
        if seen and not repeat and not (reason and reason.strip()):
            earlier = ", ".join(f"{e.get('time', '?')} ({e.get('configuration_id')})" for e in seen)
            raise SplitAlreadyScored(
                f"test split {split_id} was already scored {len(seen)} time(s), under other configurations: "
                f"{earlier}. Choose on validation; to score it again, give the reason "
                "(it is stored with the figures)")
        return {"look": len(seen) + 1, "repeat": repeat, "configuration_id": config_id}

    def record(self, split_id: str, configuration: dict, figures: dict, reason: str | None = None,
               **extra) -> dict:
        """Append a scoring (after `check` allowed it) and return the entry."""
        verdict = self.check(split_id, configuration, reason)
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "split": split_id, **verdict,
                 "configuration": configuration, "reason": (reason or "").strip() or None,
                 "figures": figures, **extra}
        entries = self.entries() + [entry]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".part")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(entries, fh, indent=1, default=float)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return entry

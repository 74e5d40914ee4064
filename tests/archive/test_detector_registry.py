"""One detector registry (desom.detection.DETECTORS): the ingest command offers exactly its
names, the library refuses any other name with an error that lists them, and a detector
registered in the one file shows up in the command without touching the command."""
import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.core.management import load_command_class

from desom import detection
from desom.detection import DETECTORS, UnknownDetector, detect_sources, detector_names, get_detector
from desom.errors import UserError
from desom.pipeline import ImagingConfig


def _detector_choices():
    parser = load_command_class("archive", "ingest").create_parser("manage.py", "ingest")
    (action,) = [a for a in parser._actions if a.dest == "detector"]
    return list(action.choices)


def test_the_ingest_command_offers_exactly_the_registry():
    assert _detector_choices() == list(DETECTORS) == list(detector_names())
    assert {"photutils", "sep"} <= set(DETECTORS)


def test_an_unknown_detector_is_a_clear_user_error():
    with pytest.raises(UnknownDetector, match=r"unknown detector 'sextractor'; choose one of: photutils, sep"):
        get_detector("sextractor")
    with pytest.raises(UserError, match="choose one of"):
        ImagingConfig(detector="sextractor")
    with pytest.raises(UserError, match="choose one of"):
        detect_sources(np.zeros((16, 16), np.float32), backend="sextractor")
    with pytest.raises(CommandError, match=r"invalid choice: 'sextractor'.*photutils.*sep"):
        call_command("ingest", "nothing.fits", "--detector", "sextractor")


def test_a_registered_detector_reaches_the_command_and_the_pipeline(monkeypatch):
    monkeypatch.setattr(detection, "DETECTORS", dict(DETECTORS))

    @detection.register_detector("nothing")
    def _nothing(data, bad, bkg_mask, s, keep_subtracted):
        empty = np.zeros(0)
        return detection.DetectionResult(x=empty, y=empty, n_pixels=empty, flux=empty, background=0.0,
                                         background_rms=1.0, subtracted=None, backend="nothing")

    assert _detector_choices()[-1] == "nothing"
    result = detect_sources(np.zeros((16, 16), np.float32), ImagingConfig(detector="nothing"))
    assert result.backend == "nothing" and len(result) == 0
    with pytest.raises(ValueError, match="already registered"):
        detection.register_detector("nothing")(_nothing)

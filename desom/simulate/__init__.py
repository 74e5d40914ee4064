"""Survey simulator: MegaCam-like exposures of known quality, to test and measure the pipeline.

    from desom.simulate import simulate_exposure, simulate_survey, KINDS, FIVE_CLASS, SurveyConfig
    truth = simulate_exposure("rbt", seed=1, path="x/1000001o.fits", n_ccds=4, ccd_shape=(1024, 512))
    truth_csv = simulate_survey(200, "var/demo", good_share=0.5)

Kinds (KINDS): good, bt, rbt, bad_seeing, bad_focus, bgp_crowded, bgp_low_exposure, bgp_pattern;
FIVE_CLASS maps them to the paper's labels Good / BT / RBT / B-Seeing / BGP (bad focus is
B-Seeing there). Calibration kinds: bias, flat. Also a CLI: python -m desom.simulate N OUTDIR.
"""
from .params import (BAD_SEEING_ARCSEC, BT_TRAIL_ARCSEC, CALIBRATION_KINDS, DEFOCUS_ARCSEC,
                     FILTERS, FIVE_CLASS, FIVE_CLASS_LABELS, GOOD_SEEING_ARCSEC, KINDS,
                     PIXEL_SCALE, RBT_TRAIL_ARCSEC, SATURATE, SEEING_THRESHOLD_ARCSEC,
                     ExposureParams, draw_parameters, good_bad)
from .render import psf_kernel
from .exposure import FULL_CCD_SHAPE, LAYOUTS, OVERSCAN_COLS, OVERSCAN_ROWS, ExposureTruth, simulate_exposure
from .survey import (DEFAULT_MIX, DEMO_SURVEY, TRUTH_COLUMNS, SurveyConfig, plan_survey,
                     read_truth_csv, resolve_mix, simulate_survey, write_truth_csv)

__all__ = [
    "KINDS", "CALIBRATION_KINDS", "FIVE_CLASS", "FIVE_CLASS_LABELS", "good_bad", "PIXEL_SCALE",
    "SATURATE", "SEEING_THRESHOLD_ARCSEC", "GOOD_SEEING_ARCSEC", "BAD_SEEING_ARCSEC",
    "BT_TRAIL_ARCSEC", "RBT_TRAIL_ARCSEC", "DEFOCUS_ARCSEC", "FILTERS", "ExposureParams",
    "draw_parameters", "psf_kernel", "FULL_CCD_SHAPE", "LAYOUTS", "OVERSCAN_COLS", "OVERSCAN_ROWS",
    "ExposureTruth", "simulate_exposure", "DEFAULT_MIX", "DEMO_SURVEY", "TRUTH_COLUMNS",
    "SurveyConfig", "plan_survey", "read_truth_csv", "resolve_mix", "simulate_survey",
    "write_truth_csv",
]

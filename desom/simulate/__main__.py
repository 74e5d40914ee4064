"""python -m desom.simulate N OUTDIR [--seed --workers --ccds --ccd-shape --layout --mix --good-share]"""
from __future__ import annotations

import argparse
import sys

from .survey import DEMO_SURVEY, simulate_survey


def _parse_mix(text: str) -> dict:
    mix = {}
    for part in filter(None, text.split(",")):
        if "=" not in part:
            raise argparse.ArgumentTypeError(f"--mix entries look like kind=share, got {part!r}")
        k, v = part.split("=", 1)
        mix[k.strip()] = float(v)
    return mix


def _parse_shape(text: str) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ccd-shape looks like 1024x512 (rows x columns), got {text!r}")
    return ny, nx


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m desom.simulate",
                                 description="Write a simulated MegaCam survey and its truth.csv.")
    ap.add_argument("n", type=int, help="number of science exposures")
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ccds", type=int, default=DEMO_SURVEY["n_ccds"])
    ap.add_argument("--ccd-shape", type=_parse_shape, default=DEMO_SURVEY["ccd_shape"],
                    help="rows x columns of a CCD's science area, e.g. 1024x512 or 4612x2048")
    ap.add_argument("--layout", choices=["raw", "processed", "mixed"], default="raw")
    ap.add_argument("--mix", type=_parse_mix, default=None, help="e.g. good=0.5,rbt=0.2,bad_seeing=0.3")
    ap.add_argument("--good-share", type=float, default=None)
    ap.add_argument("--calibration", type=int, default=0, help="extra BIAS/FLAT frames")
    ap.add_argument("--dead-ccd-prob", type=float, default=0.03)
    ap.add_argument("--compress", action="store_true", help="write .fits.fz (RICE tile compression)")
    ap.add_argument("--nuisances", action="store_true",
                    help="wind shake, optics pattern, moonlight, cirrus, fringes, satellites, halos, bad columns")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        path = simulate_survey(a.n, a.outdir, mix=a.mix, seed=a.seed, workers=a.workers,
                               n_ccds=a.ccds, ccd_shape=a.ccd_shape, layout=a.layout,
                               good_share=a.good_share, include_calibration=a.calibration,
                               dead_ccd_prob=a.dead_ccd_prob, compress=a.compress,
                               progress=not a.no_progress, nuisances=a.nuisances)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

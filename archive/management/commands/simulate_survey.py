import json

from django.core.management.base import BaseCommand, CommandError


def parse_shape(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CommandError(f"a CCD shape looks like 1024x512 (rows x columns), not {text!r}")
    if rows < 128 or cols < 128:
        raise CommandError("CCDs must be at least 128x128 pixels (sources near edges are dropped)")
    return rows, cols


class Command(BaseCommand):
    help = ("Write a simulated MegaCam-like survey of N exposures of known quality into OUTDIR, with "
            "truth.csv. Deterministic from --seed. Small CCDs by default; --full for 36 x 4612x2048.")

    def add_arguments(self, parser):
        parser.add_argument("n", type=int)
        parser.add_argument("outdir")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--ccds", type=int, default=None, help="CCDs per exposure (default: the demo's)")
        parser.add_argument("--ccd-shape", default=None, help="rows x columns of the science area, e.g. 1024x512")
        parser.add_argument("--full", action="store_true", help="real MegaCam size: 36 CCDs of 4612x2048")
        parser.add_argument("--layout", choices=["raw", "processed", "mixed"], default="raw")
        parser.add_argument("--good-share", type=float, default=None, help="0.5 for a balanced Good/Bad survey")
        parser.add_argument("--mix", default=None, help='JSON {"kind": share, ...}')
        parser.add_argument("--calibration", type=int, default=0, help="extra BIAS/FLAT frames")
        parser.add_argument("--nuisances", action="store_true",
                            help="what real exposures of every kind carry: wind shake, an optics ellipticity "
                                 "pattern, moonlight, cirrus, fringes, satellites, halos, bad columns")

    def handle(self, *args, **opts):
        from desom.simulate import DEMO_SURVEY, simulate_survey

        if opts["n"] < 1:
            raise CommandError("N must be at least 1")
        if opts["good_share"] is not None and not 0 <= opts["good_share"] <= 1:
            raise CommandError("--good-share must lie in [0, 1]")
        n_ccds, shape = DEMO_SURVEY["n_ccds"], DEMO_SURVEY["ccd_shape"]
        if opts["full"]:
            n_ccds, shape = 36, (4612, 2048)
        if opts["ccds"]:
            n_ccds = opts["ccds"]
        if opts["ccd_shape"]:
            shape = parse_shape(opts["ccd_shape"])
        try:
            mix = json.loads(opts["mix"]) if opts["mix"] else None
            truth = simulate_survey(opts["n"], opts["outdir"], mix=mix, seed=opts["seed"], workers=opts["workers"],
                                    n_ccds=n_ccds, ccd_shape=shape, layout=opts["layout"],
                                    good_share=opts["good_share"], include_calibration=opts["calibration"],
                                    progress=opts["verbosity"] > 0, nuisances=opts["nuisances"])
        except (ValueError, json.JSONDecodeError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"wrote {opts['n']} exposures to {opts['outdir']}; truth in {truth}")

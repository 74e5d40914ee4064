import argparse

from django.core.management.base import BaseCommand, CommandError

from archive.services.training import TrainingDataError, build_training_set, stamps_recipe


class Command(BaseCommand):
    help = ("Sample a DESOM-1 training set (cutouts of the archive's science exposures, or of files given "
            "with --from) into a new folder: cutouts.npy (uint16), rows.npy (where each came from) and "
            "set.json (exposures, seed, stamp recipe). train_desom1 --from-set DIR trains on it.")

    def add_arguments(self, parser):
        parser.add_argument("out", metavar="DIR", help="a new folder for the set")
        parser.add_argument("--from", dest="paths", nargs="*", default=None, help="files, folders or globs")
        parser.add_argument("--exposures", type=int, default=None, help="sample at most this many exposures")
        parser.add_argument("--per-ccd", type=int, default=100, help="cutouts sampled per CCD")
        parser.add_argument("--max-cutouts", type=int, default=200_000,
                            help="cutouts kept in all, a uniform sample (0: every sampled cutout)")
        parser.add_argument("--align-stamps", action=argparse.BooleanOptionalAction, default=None,
                            help="turn each stamp to its source's major axis before DESOM-1 "
                                 "(default: archive.services.training.DEFAULT_STAMPS)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--scheduler", default=None, help="address of a Dask scheduler (default: a local cluster)")

    def handle(self, *args, **opts):
        try:
            ts = build_training_set(opts["out"], paths=opts["paths"], n_exposures=opts["exposures"],
                                    max_per_ccd=opts["per_ccd"], max_cutouts=opts["max_cutouts"] or None,
                                    seed=opts["seed"], workers=opts["workers"], scheduler=opts["scheduler"],
                                    progress=opts["verbosity"] > 0, stamps=stamps_recipe(opts["align_stamps"]))
        except TrainingDataError as exc:
            raise CommandError(str(exc)) from exc
        meta = ts.meta
        self.stdout.write(f"training set {ts.set_id}: {len(ts)} cutouts of {meta['cutouts_seen']} sampled from "
                          f"{len(meta['exposures'])} exposures ({len(meta['failures'])} failed) in {ts.path}")

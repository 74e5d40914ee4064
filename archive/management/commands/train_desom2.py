
from django.core.management.base import BaseCommand, CommandError

from archive.services.training import (DEFAULT_CHECKPOINT_EVERY, DEFAULT_DESOM2, DEFAULT_FEATURES,
                                       DEFAULT_NORMALISER, DEFAULT_SMOOTH_SIGMA, DEFAULT_STATISTICS_WEIGHT,
                                       TrainingDataError, read_exposure_labels, train_desom2)
from desom.training import MAP_CANDIDATES
from desom.normalise import FEATURES
from desom.normalise import METHODS as NORMALISER_METHODS

from .train_desom1 import checkpoint_interval, config_overrides, device_choice, report_trained_version


class Command(BaseCommand):
    help = "Train DESOM-2 on the stored histo-vectors of the active DESOM-1 and make it active."

    def add_arguments(self, parser):
        parser.add_argument("--iterations", type=int, default=None,
                            help=f"default {DEFAULT_DESOM2['iterations']} (the science study's)")
        parser.add_argument("--batch-size", type=int, default=None, help=f"default {DEFAULT_DESOM2['batch_size']}")
        parser.add_argument("--map", default=None,
                            help="map size ROWSxCOLS, e.g. 20x20 (default: about a dozen exposures per cell)")
        parser.add_argument("--normaliser", choices=list(NORMALISER_METHODS), default=DEFAULT_NORMALISER)
        parser.add_argument("--features", choices=list(FEATURES), default=DEFAULT_FEATURES,
                            help="what DESOM-2 reads: the histo-vector alone (histo), with the five source "
                                 "statistics stored at ingest beside it (histo+stats), or with those and the two "
                                 f"coherent ones (histo+stats+coherent); default {DEFAULT_FEATURES}, the science "
                                 "study's choice")
        parser.add_argument("--statistics-weight", type=float, default=DEFAULT_STATISTICS_WEIGHT, metavar="W",
                            help="the standardised statistics are multiplied by W beside the histo-vector "
                                 f"(default {DEFAULT_STATISTICS_WEIGHT:g}, the science study's choice)")
        parser.add_argument("--smooth", type=float, default=DEFAULT_SMOOTH_SIGMA, metavar="SIGMA",
                            help="soft assignment: spread each count over its node's neighbours on the "
                                 "DESOM-1 map with the map's own kernel at T = sqrt(2) SIGMA (0: hard counts)")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--no-activate", action="store_true")
        parser.add_argument("--checkpoint-every", type=checkpoint_interval, default=None, metavar="N",
                            help=f"save the run's state every N iterations (default {DEFAULT_CHECKPOINT_EVERY}); "
                                 "the same command after a kill resumes from the last one")
        parser.add_argument("--device", type=device_choice, default="auto", metavar="auto|cpu|cuda[:N]",
                            help="where to train: auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N")
        parser.add_argument("--fresh", action="store_true",
                            help="start over instead of resuming an interrupted run of the same command")
        parser.add_argument("--labels", default=None, metavar="CSV",
                            help="labelled exposures (columns expnum and good_bad or label, e.g. a survey's "
                                 "truth.csv or an expert's sample) that choose among --candidates maps")
        parser.add_argument("--candidates", type=int, default=None, metavar="K",
                            help=f"maps trained with different seeds, the labels keeping the one whose cells "
                                 f"name them best (default {MAP_CANDIDATES} with --labels, 1 without)")

    def handle(self, *args, **opts):
        try:
            labels = read_exposure_labels(opts["labels"]) if opts["labels"] else None
            candidates = opts["candidates"] if opts["candidates"] is not None else (MAP_CANDIDATES if labels else 1)
            version = train_desom2(overrides=config_overrides(opts), normaliser=opts["normaliser"],
                                   smooth_sigma=opts["smooth"], features=opts["features"],
                                   statistics_weight=opts["statistics_weight"], seed=opts["seed"], activate=not opts["no_activate"],
                                   progress=opts["verbosity"] > 0, checkpoint_every=opts["checkpoint_every"],
                                   fresh=opts["fresh"], device=opts["device"], candidates=candidates,
                                   labels=labels)
        except (TrainingDataError, ValueError) as exc:   # ValueError: a bad --smooth or --set value
            raise CommandError(str(exc)) from exc
        report_trained_version(self.stdout, "DESOM-2", version)

import json

from django.core.management.base import BaseCommand, CommandError

from archive.services.evaluation import EvaluationError, evaluate, report_lines
from archive.services.training import TrainingDataError, read_exposure_labels


class Command(BaseCommand):
    help = ("Score the active DESOM-2 against a truth.csv: the paper's all-members protocol and the "
            "held-out protocol (a labelled share names the cells, the rest are scored), labelling effort.")

    def add_arguments(self, parser):
        parser.add_argument("--truth", required=True, help="truth.csv (file, expnum, kind, label, good_bad)")
        parser.add_argument("--labelled-fraction", type=float, default=0.3)
        parser.add_argument("--labelled", default=None, metavar="CSV",
                            help="the exposures (an expnum column) that name the cells instead of a random "
                                 "--labelled-fraction: the labels a `train_desom2 --labels` run chose its map "
                                 "with, so that none of them is scored")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--bootstrap", type=int, default=1000)
        parser.add_argument("--json", dest="json_out", default=None, help="also write every figure to this file")

    def handle(self, *args, **opts):
        try:
            labelled = set(read_exposure_labels(opts["labelled"])) if opts["labelled"] else None
            result = evaluate(opts["truth"], labelled_fraction=opts["labelled_fraction"], seed=opts["seed"],
                              n_boot=opts["bootstrap"], labelled=labelled)
        except (EvaluationError, TrainingDataError) as exc:
            raise CommandError(str(exc)) from exc
        for line in report_lines(result):
            self.stdout.write(line)
        if opts["json_out"]:
            with open(opts["json_out"], "w") as handle:
                json.dump(result, handle, indent=1, default=str)

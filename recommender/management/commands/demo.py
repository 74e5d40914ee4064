"""The embedded default job: a small simulated survey, both DESOMs trained on short schedules,
ingest, assignment, search indexes, the evaluation, then the site on 127.0.0.1:8000.

It spans the archive and the recommender, so it lives in the app at the top of the chain."""
import csv
import time
from collections import Counter, defaultdict
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

DEMO_USER = "curator"


class Command(BaseCommand):
    help = ("Run the whole system on a small simulated survey and serve it: simulate, train DESOM-1, "
            "ingest, train DESOM-2, assign, index, evaluate, label cells as a simulated expert, serve.")

    def add_arguments(self, parser):
        parser.add_argument("--exposures", type=int, default=200)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--desom1-map", default="25x25", help="the paper's 25x25 by default")
        parser.add_argument("--desom1-iterations", type=int, default=700)
        parser.add_argument("--desom1-batch", type=int, default=128)
        parser.add_argument("--desom2-map", default=None, help="default: about 12 exposures per cell (benchmarks/bench_science.py)")
        parser.add_argument("--desom2-iterations", type=int, default=1500)
        from archive.services.training import DEFAULT_FEATURES
        from desom.normalise import FEATURES

        parser.add_argument("--features", choices=list(FEATURES), default=None,
                            help=f"what DESOM-2 reads (train_desom2 --features; default: train_desom2's, {DEFAULT_FEATURES})")
        parser.add_argument("--no-serve", action="store_true", help="stop after the evaluation")
        parser.add_argument("--addrport", default="127.0.0.1:8000")

    def step(self, title):
        elapsed = time.perf_counter() - self.started
        self.stdout.write(self.style.MIGRATE_HEADING(f"\n[{elapsed:6.1f} s] {title}"))

    def handle(self, *args, **opts):
        from archive.models import Exposure, ModelVersion
        from archive.services import quality, versions
        from archive.services.evaluation import evaluate, report_lines
        from archive.services.training import suggested_desom2_map

        self.started = time.perf_counter()
        verbosity = opts["verbosity"]
        data = Path(settings.ARCHIVE_DATA_DIR)
        survey = data / f"demo-survey-{opts['exposures']}-{opts['seed']}"
        truth = survey / "truth.csv"

        self.step("database")
        call_command("migrate", verbosity=0)

        self.step(f"simulating {opts['exposures']} exposures into {survey}")
        if truth.exists():
            self.stdout.write("  already there (delete the folder to simulate again)")
        else:
            call_command("simulate_survey", opts["exposures"], str(survey), seed=opts["seed"],
                         workers=opts["workers"], good_share=0.5, calibration=2, verbosity=verbosity)

        if versions.active_version(ModelVersion.DESOM1) is None:
            self.step(f"training DESOM-1 ({opts['desom1_map']}, {opts['desom1_iterations']} iterations)")
            call_command("train_desom1", "--from", str(survey), map=opts["desom1_map"], seed=opts["seed"],
                         iterations=opts["desom1_iterations"], batch_size=opts["desom1_batch"],
                         per_ccd=100, workers=opts["workers"], verbosity=verbosity)
            # The archive's own schedule (one learning rate decaying over the last third, T_min 1)
            # passes the map-order gate at 700 iterations (TE 0.19, churn 0.12); a faster
            # prototype rate did not (churn 0.45).
        else:
            self.step("DESOM-1 already trained")

        self.step("ingesting the survey")
        call_command("ingest", str(survey), workers=opts["workers"], detector="sep", verbosity=verbosity)

        if versions.active_version(ModelVersion.DESOM2) is None:
            n = Exposure.objects.filter(is_science=True).count()
            desom2_map = opts["desom2_map"] or "{0}x{0}".format(suggested_desom2_map(n))
            self.step(f"training DESOM-2 ({desom2_map}, {opts['desom2_iterations']} iterations)")
            features = {"features": opts["features"]} if opts["features"] else {}
            call_command("train_desom2", map=desom2_map, seed=opts["seed"], iterations=opts["desom2_iterations"],
                         batch_size=32, verbosity=verbosity, **features)
        else:
            self.step("DESOM-2 already trained")

        self.step("assigning cells")
        call_command("assign", workers=opts["workers"], verbosity=verbosity)
        self.step("building the search indexes")
        call_command("build_index", verbosity=verbosity)

        self.step("evaluation against the simulated truth")
        for line in report_lines(evaluate(truth, n_boot=300)):
            self.stdout.write(line)

        self.step("a simulated expert labels the cells and flags the donut prototypes")
        curator = self.demo_staff_user()
        labelled, flagged = self.simulated_expert(truth, curator, quality)
        self.stdout.write(f"  labelled {labelled} cells from their members' simulated truth; "
                          f"'bad focus' flag on {flagged} exposures")
        self.step(f"done in {time.perf_counter() - self.started:.0f} s")
        if opts["no_serve"]:
            return
        self.stdout.write(f"Serving http://{opts['addrport']}/ (staff login: {DEMO_USER} / {DEMO_USER}-demo). "
                          "Ctrl-C stops.")
        call_command("runserver", opts["addrport"], use_reloader=False)

    def demo_staff_user(self):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=DEMO_USER, defaults={"is_staff": True,
                                                                                   "is_superuser": True})
        if created:
            user.set_password(f"{DEMO_USER}-demo")
            user.save()
        return user

    def simulated_expert(self, truth_csv, user, quality):
        """Label each cell by the majority kind of its members (an expert who looked at them),
        and flag the DESOM-1 nodes where bad-focus exposures put far more of their sources than
        the others do. A stand-in for real expert work, so the pages show the workflow."""
        import numpy as np

        from archive.models import CellAssignment, Exposure, ModelVersion
        from archive.services import versions
        from archive.services.training import histo_matrix

        kind_label = {"good": "Good", "bt": "BT", "rbt": "RBT", "bad_seeing": "B-Seeing", "bad_focus": "bad focus",
                      "bgp_crowded": "BGP", "bgp_low_exposure": "low exposure", "bgp_pattern": "BGP"}
        with open(truth_csv) as handle:
            kind_of = {int(row["expnum"]): row["kind"] for row in csv.DictReader(handle)}
        desom2 = versions.active_version(ModelVersion.DESOM2)
        members = defaultdict(list)
        for expnum, cell in CellAssignment.objects.filter(model_version=desom2).values_list("exposure__expnum", "cell"):
            if expnum in kind_of:
                members[cell].append(kind_label.get(kind_of[expnum], kind_of[expnum]))
        labelled = 0
        for cell, labels in sorted(members.items()):
            (label, count), = Counter(labels).most_common(1)
            # Like the paper's white cells: no label where no kind holds a clear majority.
            quality.label_cell(cell, label if count / len(labels) >= 0.6 else "mixed", user=user,
                               note="demo: simulated expert", desom2=desom2)
            labelled += 1

        desom1 = versions.active_version(ModelVersion.DESOM1)
        ids, histos = histo_matrix(desom1)
        expnums = dict(Exposure.objects.filter(pk__in=ids.tolist()).values_list("pk", "expnum"))
        is_focus = np.array([kind_of.get(expnums.get(int(i))) == "bad_focus" for i in ids])
        flagged = 0
        if is_focus.any() and (~is_focus).any():
            shares = histos / np.maximum(histos.sum(axis=1, keepdims=True), 1)
            lift = shares[is_focus].mean(axis=0) / np.maximum(shares[~is_focus].mean(axis=0), 1e-4)
            nodes = [int(n) for n in np.argsort(lift)[::-1][:8] if lift[n] > 3]
            if nodes:
                in_nodes = shares[:, nodes].sum(axis=1)
                threshold = float(np.clip((np.median(in_nodes[is_focus]) + np.median(in_nodes[~is_focus])) / 2,
                                          0.01, 1.0))
                flag = quality.save_flag("bad focus", nodes, threshold, user=user,
                                         description="demo: nodes where simulated bad-focus exposures crowd")
                flagged = flag.exposures.count()
        return labelled, flagged

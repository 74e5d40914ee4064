import argparse
import json

from django.core.management.base import BaseCommand, CommandError

from archive.services.training import DEFAULT_CHECKPOINT_EVERY, stamps_recipe, train_desom1


class Command(BaseCommand):
    help = ("Train DESOM-1 on cutouts sampled from the archive's science exposures (or from files "
            "given with --from, or on a training set with --from-set), save the checkpoint and make it "
            "the active DESOM-1. A killed run resumes when the same command is run again.")

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="paths", nargs="*", default=None, help="files, folders or globs")
        parser.add_argument("--exposures", type=int, default=None, help="sample at most this many exposures")
        parser.add_argument("--per-ccd", type=int, default=100, help="cutouts sampled per CCD")
        parser.add_argument("--max-cutouts", type=int, default=200_000,
                            help="cutouts kept in all, a uniform sample (0: every sampled cutout)")
        parser.add_argument("--iterations", type=int, default=None)
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--map", default=None, help="map size ROWSxCOLS, e.g. 25x25")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                            help="any other DESOMConfig field, e.g. --set t_min=0.5")
        parser.add_argument("--align-stamps", action=argparse.BooleanOptionalAction, default=None,
                            help="turn each stamp to its source's major axis before DESOM-1 "
                                 "(default: archive.services.training.DEFAULT_STAMPS)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--precision", choices=["auto", "bf16", "float32"], default="auto",
                            help="auto: bf16 autocast where the hardware has it natively, else float32")
        parser.add_argument("--no-activate", action="store_true")
        parser.add_argument("--from-set", dest="from_set", default=None, metavar="DIR",
                            help="train on a training set written by sample_cutouts (or --save-set) "
                                 "instead of sampling: another map size or seed on the same cutouts")
        parser.add_argument("--save-set", dest="save_set", default=None, metavar="DIR",
                            help="keep the sampled training set in DIR (a new folder) for later runs")
        parser.add_argument("--checkpoint-every", type=checkpoint_interval, default=None, metavar="N",
                            help=f"save the run's state every N iterations (default {DEFAULT_CHECKPOINT_EVERY}); "
                                 "the same command after a kill resumes from the last one")
        parser.add_argument("--fresh", action="store_true",
                            help="start over instead of resuming an interrupted run of the same command")
        parser.add_argument("--device", type=device_choice, default="auto", metavar="auto|cpu|cuda[:N]",
                            help="where to train: auto (a CUDA GPU when torch sees one, else the CPU), cpu, "
                                 "cuda or cuda:N; --precision auto follows it")
        parser.add_argument("--no-order-gate", action="store_true",
                            help="register the map even if its topographic error or BMU churn is above the "
                                 "gate's thresholds (desom.metrics.MAX_TOPOGRAPHIC_ERROR, MAX_BMU_CHURN)")

    def handle(self, *args, **opts):
        from desom.metrics import MapOrderError

        overrides = config_overrides(opts)
        try:
            version = train_desom1(paths=opts["paths"], n_exposures=opts["exposures"], max_per_ccd=opts["per_ccd"],
                                   max_cutouts=opts["max_cutouts"] or None, overrides=overrides, seed=opts["seed"],
                                   activate=not opts["no_activate"], workers=opts["workers"],
                                   progress=opts["verbosity"] > 0, precision=opts["precision"],
                                   order_gate=not opts["no_order_gate"], training_set=opts["from_set"],
                                   save_set=opts["save_set"], checkpoint_every=opts["checkpoint_every"],
                                   fresh=opts["fresh"], device=opts["device"], stamps=stamps_recipe(opts["align_stamps"]))
        except (ValueError, MapOrderError) as exc:   # TrainingDataError, TrainingSetError, a bad --set
            raise CommandError(str(exc)) from exc
        report_trained_version(self.stdout, "DESOM-1", version)


def report_trained_version(stdout, name: str, version) -> None:
    """What both training commands print at the end: a resume, where it went, its metrics."""
    resumed = version.metrics.get("resumed_at")
    if resumed:
        stdout.write(f"resumed an interrupted run at {resumed['phase']} iteration {resumed['iteration']}")
    stdout.write(f"{name} {version.version_id} saved to {version.checkpoint_path}"
                 f"{' and activated' if version.is_active else ''}")
    stdout.write(json.dumps(version.metrics, indent=1))


def device_choice(text: str) -> str:
    """--device: auto, cpu, cuda or cuda:N (whether that device exists is checked when training
    starts, by desom.inference.default_device, with the reason when it does not)."""
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, not {text!r}")


def checkpoint_interval(text: str) -> int:
    """--checkpoint-every: iterations between saved states, 0 for only at the end."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of iterations, 0 or more (0: only at the end), "
                                         f"not {text!r}")
    return value


def config_overrides(opts) -> dict:
    overrides = {}
    if opts.get("iterations"):
        overrides["iterations"] = opts["iterations"]
    if opts.get("batch_size"):
        overrides["batch_size"] = opts["batch_size"]
    if opts.get("map"):
        try:
            rows, cols = (int(v) for v in opts["map"].lower().split("x"))
        except ValueError:
            raise CommandError(f"--map must look like 25x25, not {opts['map']!r}")
        overrides.update(map_rows=rows, map_cols=cols)
    for item in opts.get("set") or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"--set takes KEY=VALUE, not {item!r}")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return overrides

"""Evaluation of the active DESOM-2 against a survey's truth (simulated, or an expert's sample)."""
from __future__ import annotations

from ..models import CellAssignment, ModelVersion
from . import versions


class EvaluationError(ValueError):
    pass


def evaluate(truth_csv, *, labelled_fraction: float = 0.3, seed: int = 0, n_boot: int = 1000,
             labelled: set[int] | None = None) -> dict:
    """Every protocol of `desom.evaluation` for the archive's cells against truth.csv, matched
    on exposure number. Exposures of the truth that are not in the archive are counted.
    labelled: the exposure numbers that name the cells in the held-out protocol (default: a
    random labelled_fraction). Pass the sample a `train_desom2 --labels` run chose its map with,
    or the held-out figures score exposures whose labels chose the map."""
    from desom.evaluation import evaluate_cells
    from desom.simulate import read_truth_csv

    desom2 = versions.active_version(ModelVersion.DESOM2)
    if desom2 is None:
        raise EvaluationError("no active DESOM-2: train one and run assign first")
    try:
        rows = read_truth_csv(truth_csv)
    except (OSError, KeyError, ValueError) as exc:
        raise EvaluationError(f"cannot read the truth file {truth_csv}: {exc}") from exc
    for row in rows:
        row["expnum"] = int(row["expnum"])
    cell_of = dict(CellAssignment.objects.filter(model_version=desom2).values_list("exposure__expnum", "cell"))
    try:
        result = evaluate_cells(cell_of, rows, key="expnum", labelled_fraction=labelled_fraction, seed=seed,
                                n_boot=n_boot, labelled_keys=None if labelled is None else set(labelled))
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc
    result["model_version"] = desom2.version_id
    result["map"] = list(desom2.map_shape)
    return result


PAPER = {"accuracy": 0.958, "precision": 0.929, "recall": 0.991}


def report_lines(result: dict) -> list[str]:
    """A short human-readable summary beside the paper's figures."""
    def score(scores, name):
        value = scores.get(name)
        if value is None or value != value:
            return "   n/a         "
        ci = (scores.get("ci95") or {}).get(name)
        return f"{value:6.3f}" + (f" [{ci[0]:.2f},{ci[1]:.2f}]" if ci else "         ")

    everyone, held = result["all_members"], result["heldout"]
    lines = [f"Evaluation of DESOM-2 {result['model_version']} ({result['map'][0]}x{result['map'][1]} cells) on "
             f"{result['n_exposures']} exposures with truth ({result['n_without_cell']} of the truth have no cell)",
             f"{'protocol':34s} {'accuracy':16s} {'precision':16s} {'recall':16s}  (Good = positive class)",
             f"{'paper, expert sample':34s} {PAPER['accuracy']:6.3f}           {PAPER['precision']:6.3f}"
             f"           {PAPER['recall']:6.3f}",
             f"{'all members' + (' (OPTIMISTIC)' if everyone.get('optimistic') else ''):34s} "
             f"{score(everyone, 'accuracy')} {score(everyone, 'precision')} {score(everyone, 'recall')}",
             f"{'held-out {:.0%} labelled, balanced'.format(held.get('labelled_fraction', 0)):34s} "
             f"{score(held, 'accuracy')} {score(held, 'precision')} {score(held, 'recall')}",
             f"  held-out: {held.get('n_evaluated', 0)} scored, coverage {held.get('coverage', 0):.2f} "
             f"(cells with no labelled member abstain), accuracy counting abstentions as coin flips "
             f"{held.get('accuracy_effective', float('nan')):.3f}",
             f"  members per cell: mean {everyone['members_per_cell']['mean']:.1f}, "
             f"{everyone['n_cells']} occupied cells"]
    leaks = {kind: row for kind, row in (held.get("confusion_by_kind") or {}).items()
             if kind != "good" and row.get("predicted_good")}
    if leaks:
        lines.append("  bad kinds that ended in Good cells (held-out): " +
                     ", ".join(f"{k} {v['predicted_good']}/{v['n']}" for k, v in sorted(leaks.items())))
    effort = result.get("labelling_effort") or {}
    if effort.get("cells_needed"):
        lines.append("  labelling effort: " + ", ".join(
            f"{float(share):.0%} of exposures in {n} cells" for share, n in effort["cells_needed"].items()))
    purity = result.get("five_class") or {}
    if "purity" in purity:
        lines.append(f"  five-class purity {purity['purity']:.3f}; purity by simulated kind "
                     f"{result['kinds'].get('purity', float('nan')):.3f}")
    return lines

"""Early-stopping rules replayed on real histories: where each would stop, what it keeps.

    python benchmarks/early_stopping.py [--published reports/published/frappe] [--json]
    python benchmarks/early_stopping.py --runs <runs root> ...   # also other runs' histories

For every run of a published reproduction, replays the validation RMSE per epoch under the
AFM code's rule ("rises": stop once it rose P epochs in a row) and "no new best for P
epochs" ("plateau") for several P, and reports the epoch each stops at and the best
validation RMSE it keeps, against the whole recorded history. A history that ended by a rule
already (the published runs stopped under the profile's rule) shows only what a rule that
stops *earlier* keeps; a rule that would go on past its end is marked "beyond" (a lower
bound on its epochs). ``--runs`` adds the histories under other run folders (every
``<group>/<dataset>/<run id>/history.json``): runs trained with a longer patience show what
the shorter rules would have kept, and the runs' own test RMSE is listed beside them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aoaffm.train.stopping import best_epoch, should_stop  # noqa: E402

RULES = [("rises", 4), *[("plateau", p) for p in (2, 3, 4, 6, 10)]]


def replay(history: list[float], rule: str, patience: int, min_epochs: int = 5) -> dict:
    """Where ``rule`` stops on ``history`` and the best validation RMSE it has seen by then."""
    for epoch in range(1, len(history) + 1):
        if should_stop(history[:epoch], min_epochs, patience, rule):
            seen = history[:epoch]
            return {"stop": epoch, "best": min(seen), "best_epoch": best_epoch(seen)}
    return {"stop": None, "best": min(history), "best_epoch": best_epoch(history)}


def histories(args) -> list[tuple[str, list[float], float | None]]:
    """(run name, validation RMSE per epoch, the run's test RMSE or None) of every run."""
    found = []
    root = Path(args.published)
    for record in json.loads((root / "runs.json").read_text()):
        history = json.loads((root / record["history"]).read_text())
        name = f"{record['group']}/{record['model']}/s{record['seed']}"
        found.append((name, [h["validation_rmse"] for h in history], record.get("test_rmse")))
    for runs_root in args.runs:
        for path in sorted(Path(runs_root).glob("*/*/*/history.json")):
            history = json.loads(path.read_text())
            metrics = path.parent / "metrics.json"
            test = json.loads(metrics.read_text())["test_rmse"] if metrics.is_file() else None
            group, run_id = path.parts[-4], path.parts[-2]
            found.append((f"{group}/{run_id}", [h["validation_rmse"] for h in history], test))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published", default="reports/published/frappe")
    parser.add_argument("--runs", action="append", default=[], help="another runs root")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for name, history, test in histories(args):
        row = {"run": name, "epochs": len(history), "best": min(history), "test_rmse": test}
        for rule, patience in RULES:
            result = replay(history, rule, patience)
            row[f"{rule}{patience}"] = result
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        "| run | epochs run | best | test RMSE | "
        + " | ".join(f"{r} P={p}" for r, p in RULES)
        + " |"
    )
    print("|---|---:|---:|---:|" + "---|" * len(RULES))
    for row in rows:
        cells = []
        for rule, patience in RULES:
            r = row[f"{rule}{patience}"]
            stop = "beyond" if r["stop"] is None else f"ep {r['stop']}"
            cells.append(f"{stop}, {r['best'] - row['best']:+.4f}")
        test = "—" if row["test_rmse"] is None else f"{row['test_rmse']:.4f}"
        print(
            f"| {row['run']} | {row['epochs']} | {row['best']:.4f} | {test} | "
            + " | ".join(cells)
            + " |"
        )


if __name__ == "__main__":
    main()

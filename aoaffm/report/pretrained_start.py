"""What the pre-trained start does for the compared algorithms: Table 3's HOFM, Wide&Deep and
DeepCross (pre-trained FM embeddings, as the paper says it did) beside the same runs from
random embeddings (the random_start group), as a table, a figure of the validation curves
and a report section."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..errors import UnreadableFile
from .figures import DPI, _load_history, _no_runs, _save
from .paper import DATASET_LABELS, MODEL_LABELS, TABLE3
from .records import Stat, select
from .tables import DIFF_NOTE, MISSING, SPREAD_NOTE, Table

GROUP = "random_start"
STARTS = (("table3", "pre-trained FM"), (GROUP, "random"))


def _pairs(records: list[dict]) -> list[tuple[str, str]]:
    """(dataset, model) of every random-start run, in the records' order."""
    return list(dict.fromkeys((r["dataset"], r["model"]) for r in records if r["group"] == GROUP))


def _runs(records, group, dataset, model, seeds) -> list[dict]:
    return [r for r in select(records, group, dataset, model) if r["seed"] in seeds]


def start_table(records: list[dict]) -> Table:
    """Validation and test RMSE, best and last epoch of each baseline from both starts, on the
    seeds both have."""
    paper = {(p.dataset, p.model): p.test_rmse for p in TABLE3}
    rows, shown = [], []
    for dataset, model in _pairs(records):
        seeds = {r["seed"] for r in select(records, GROUP, dataset, model)}
        seeds &= {r["seed"] for r in select(records, "table3", dataset, model)}
        row = {"dataset": dataset, "model": model, "n_runs": len(seeds)}
        row["rmse_paper"] = paper.get((dataset, model))
        stats = {}
        for group, label in STARTS:
            key = "pretrained" if group == "table3" else "random"
            runs = _runs(records, group, dataset, model, seeds)
            for metric in ("validation_rmse", "test_rmse", "best_epoch", "epochs"):
                stat = Stat.of(r.get(metric) for r in runs)
                stats[key, metric] = stat
                row[f"{key}_{metric}"] = stat.mean if stat else None
            starts = {r.get("pretrained_from") for r in runs}
            if runs and starts != ({"fm"} if key == "pretrained" else {None}):
                raise UnreadableFile(
                    f"run records: the {group} runs of {dataset} {model} start from "
                    f"{sorted(map(str, starts))}; expected {label} embeddings"
                )
        test = (stats["pretrained", "test_rmse"], stats["random", "test_rmse"])
        row["test_diff"] = test[1].mean - test[0].mean if all(test) else None
        rows.append(row)

        def show(key, metric, digits=4, stats=stats):
            stat = stats[key, metric]
            if stat is None:
                return MISSING
            return stat.format(digits) if digits else f"{stat.mean:g}"

        shown.append(
            {
                "Dataset": DATASET_LABELS.get(dataset, dataset),
                "Model": MODEL_LABELS.get(model, model),
                "Test RMSE paper": f"{row['rmse_paper']:.4f}" if row["rmse_paper"] else MISSING,
                "Validation, pre-trained": show("pretrained", "validation_rmse"),
                "Validation, random": show("random", "validation_rmse"),
                "Test, pre-trained": show("pretrained", "test_rmse"),
                "Test, random": show("random", "test_rmse"),
                "Δ test (random − pre-trained)": MISSING
                if row["test_diff"] is None
                else f"{row['test_diff']:+.4f}",
                "Best / last epoch, pre-trained": f"{show('pretrained', 'best_epoch', 0)} / "
                f"{show('pretrained', 'epochs', 0)}",
                "Best / last epoch, random": f"{show('random', 'best_epoch', 0)} / "
                f"{show('random', 'epochs', 0)}",
            }
        )
    return Table(
        "pretrained_start",
        "The pre-trained start of the compared algorithms",
        pd.DataFrame(rows),
        pd.DataFrame(shown),
        [
            "Pre-trained: the Table 3 run (embeddings and linear part from the pre-trained FM, "
            "as the paper's protocol). Random: the random_start run, the same settings, seed "
            "and learning rate from the seeded random initialisation.",
            "Epochs: the best validation epoch (whose weights are evaluated) and the last "
            "epoch trained before early stopping.",
            SPREAD_NOTE,
            DIFF_NOTE.replace("ours − paper", "random − pre-trained").replace(
                "ours is worse", "the random start is worse"
            ),
        ],
    )


def start_curves(records: list[dict], root: str | os.PathLike = ".") -> pd.DataFrame:
    """Validation RMSE per epoch of the lowest seed's runs from both starts."""
    rows = []
    for dataset, model in _pairs(records):
        for group, label in STARTS:
            runs = sorted(select(records, group, dataset, model), key=lambda r: r["seed"])
            if not runs or not runs[0].get("history"):
                continue
            path = Path(root) / runs[0]["history"]
            if not path.is_file():
                continue
            rows += [
                {
                    "dataset": dataset,
                    "model": model,
                    "start": label,
                    "seed": runs[0]["seed"],
                    "epoch": e["epoch"],
                    "validation_rmse": e["validation_rmse"],
                }
                for e in _load_history(path)
            ]
    columns = ["dataset", "model", "start", "seed", "epoch", "validation_rmse"]
    return pd.DataFrame(rows, columns=columns)


def plot_start(data: pd.DataFrame, path: str | os.PathLike, *, subtitle: str = "") -> Path:
    """One panel per baseline: validation RMSE per epoch from each start."""
    panels = list(dict.fromkeys(zip(data.dataset, data.model, strict=True))) or [None]
    fig = Figure(figsize=(4.5 * len(panels), 4.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    paper = {(p.dataset, p.model): p.test_rmse for p in TABLE3}
    for ax, panel in zip(axes, panels, strict=True):
        if panel is None:
            _no_runs(ax, "no random-start runs")
            continue
        dataset, model = panel
        ax.set_title(f"{DATASET_LABELS.get(dataset, dataset)} {MODEL_LABELS.get(model, model)}")
        for (_, label), style in zip(STARTS, ("-o", "--s"), strict=True):
            curve = data[(data.dataset == dataset) & (data.model == model) & (data.start == label)]
            if not curve.empty:
                ax.plot(curve.epoch, curve.validation_rmse, style, ms=3, label=label)
        if (dataset, model) in paper:
            ax.axhline(paper[dataset, model], color="gray", ls=":", label="paper (test RMSE)")
        ax.set_xlabel("Epoch")
        ax.set_ylabel("Validation RMSE")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    title = "Compared algorithms from the pre-trained FM and from random embeddings"
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=12)
    return _save(fig, path)


def start_section(table: Table, markdown: str) -> str:
    """The report's section: the table (``markdown``) and the figure, or why there are none."""
    heading = "## The pre-trained start of the compared algorithms"
    if table.data.empty:
        return (
            f"{heading}\n\nNot run: no random_start runs (the profile's random_start.datasets "
            "is empty, or model.pretrained_baselines is off, so Table 3's baselines already "
            "start at random)."
        )
    body = markdown.split("\n", 1)[1].strip()  # the table without its own heading
    return (
        f'{heading}\n\nThe paper: "we also utilized the pretrained feature embedding vectors of '
        'FM and FFM to boost the performances of compared algorithms". Each baseline below '
        "was trained twice with the same settings, seed and learning rate: from the "
        "pre-trained FM (Table 3's run) and from random embeddings.\n\n"
        f"{body}\n\n![Validation RMSE per epoch from both starts](figures/pretrained_start.png)"
    )

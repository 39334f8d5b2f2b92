"""Figures 3 and 4 (matplotlib's Agg canvas, no pyplot state), plus the data behind them."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ..errors import UnreadableFile
from ..io import atomic_path, read_json
from .paper import DATASET_LABELS, MODEL_LABELS
from .records import select, sweep_stats

FIGURE_DATASETS = ("movielens", "frappe")  # the paper's rows: (a)-(c) MovieLens, (d)-(f) Frappe
SWEEPS = (
    ("sweep_embedding_size", "Embedding size K", ("fm", "afm", "ffm", "aoaffm")),
    ("sweep_dropout", "Dropout ratio", ("fm", "afm", "ffm", "aoaffm")),
    ("sweep_lambda", "Regularization strength λ", ("afm", "aoaffm")),
)
FIGURE4_MODELS = (("aoaffm", "table2"), ("afm", "table2"), ("ffm", "table3"))
MODEL_COLORS = {
    "fm": "tab:blue",
    "afm": "tab:orange",
    "ffm": "tab:green",
    "aoaffm": "tab:red",
    "aoafm": "tab:purple",
    "affm": "tab:brown",
}
FIGURE3_SIZE = (15.0, 8.5)  # inches at DPI: 1500 x 850 pixels
FIGURE4_SIZE = (13.0, 5.0)
DPI = 100


def _no_runs(ax, what: str = "no runs") -> None:
    ax.text(
        0.5, 0.5, what, ha="center", va="center", fontsize=14, color="gray", transform=ax.transAxes
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _scale_x(ax, group: str, values: list[float]) -> None:
    """Log x for K and λ when the values span a decade or more; symlog when λ includes 0."""
    positive = [v for v in values if v > 0]
    if group == "sweep_dropout" or len(positive) < 2 or max(positive) / min(positive) < 8:
        return
    if group == "sweep_lambda" and len(positive) < len(values):
        ax.set_xscale("symlog", linthresh=min(positive))
    else:
        ax.set_xscale("log", base=2 if group == "sweep_embedding_size" else 10)
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def figure3_data(records: list[dict]) -> pd.DataFrame:
    """Mean (± std) validation RMSE per dataset, sweep, model and swept value."""
    rows = []
    for dataset in FIGURE_DATASETS:
        for group, _, models in SWEEPS:
            present = {
                r["model"] for r in records if r["group"] == group and r["dataset"] == dataset
            }
            for model in [*models, *sorted(present - set(models))]:
                for value, stat in sweep_stats(records, group, dataset, model).items():
                    rows.append(
                        {
                            "dataset": dataset,
                            "sweep": group.removeprefix("sweep_"),
                            "model": model,
                            "value": value,
                            "validation_rmse_mean": stat.mean,
                            "validation_rmse_std": stat.std if stat.has_spread else None,
                            "n_runs": stat.n,
                        }
                    )
    columns = [
        "dataset",
        "sweep",
        "model",
        "value",
        "validation_rmse_mean",
        "validation_rmse_std",
        "n_runs",
    ]
    return pd.DataFrame(rows, columns=columns)


def plot_figure3(records: list[dict], path: str | os.PathLike, *, subtitle: str = "") -> Path:
    """Six panels: rows MovieLens / Frappe, columns embedding size / dropout / λ."""
    data = figure3_data(records)
    fig = Figure(figsize=FIGURE3_SIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(len(FIGURE_DATASETS), len(SWEEPS), squeeze=False)
    for row, dataset in enumerate(FIGURE_DATASETS):
        for col, (group, xlabel, _) in enumerate(SWEEPS):
            ax = axes[row][col]
            letter = "abcdef"[row * len(SWEEPS) + col]
            ax.set_title(f"({letter}) {DATASET_LABELS[dataset]}: {xlabel}")
            panel = data[(data.dataset == dataset) & (data.sweep == group.removeprefix("sweep_"))]
            if panel.empty:
                _no_runs(ax)
                continue
            for model, lines in panel.groupby("model", sort=False):
                ax.errorbar(
                    lines.value,
                    lines.validation_rmse_mean,
                    yerr=lines.validation_rmse_std.fillna(0.0).to_numpy(dtype=float),
                    marker="o",
                    capsize=3,
                    color=MODEL_COLORS.get(model),
                    label=MODEL_LABELS.get(model, model),
                )
            _scale_x(ax, group, sorted(panel.value.unique()))
            ax.set_xlabel(xlabel)
            ax.set_ylabel("Validation RMSE")
            ax.grid(alpha=0.3)
            ax.legend()
    title = "Figure 3: validation RMSE of FM, AFM, FFM and AoAFFM under different parameters"
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=13)
    return _save(fig, path)


def _load_history(path: Path) -> list[dict]:
    """A run's history.json: a list of {epoch, train_rmse, validation_rmse, ...}."""
    history = read_json(path, "a list of per-epoch entries")
    if not isinstance(history, list):
        raise UnreadableFile(
            f"{path}: expected a list of per-epoch entries, got {type(history).__name__}"
        )
    for index, entry in enumerate(history):
        missing = [
            k
            for k in ("epoch", "train_rmse", "validation_rmse")
            if not isinstance(entry, dict) or k not in entry
        ]
        if missing:
            raise UnreadableFile(f"{path}: entry {index}: missing {missing}")
    return history


def figure4_runs(records: list[dict]) -> dict[tuple[str, str], dict]:
    """The run plotted per (dataset, model): the lowest seed of its group."""
    chosen = {}
    for dataset in FIGURE_DATASETS:
        for model, group in FIGURE4_MODELS:
            runs = sorted(select(records, group, dataset, model), key=lambda r: r["seed"])
            if runs:
                chosen[dataset, model] = runs[0]
    return chosen


def figure4_data(
    records: list[dict], root: str | os.PathLike = ".", datasets=FIGURE_DATASETS
) -> tuple[pd.DataFrame, list[str]]:
    """Per-epoch train and validation RMSE of each Figure 4 run, and what was missing among
    ``datasets`` (those the profile covers)."""
    rows, gaps = [], []
    chosen = figure4_runs(records)
    for dataset in [d for d in FIGURE_DATASETS if d in datasets]:
        for model, group in FIGURE4_MODELS:
            name = f"{DATASET_LABELS[dataset]} {MODEL_LABELS[model]}"
            run = chosen.get((dataset, model))
            if run is None:
                gaps.append(f"Figure 4: no {group} run of {name}")
                continue
            if not run.get("history"):
                gaps.append(f"Figure 4: the {group} run of {name} records no history")
                continue
            path = Path(root) / run["history"]
            if not path.is_file():
                gaps.append(f"Figure 4: history of {name} not found at {path}")
                continue
            for entry in _load_history(path):
                rows.append(
                    {
                        "dataset": dataset,
                        "model": model,
                        "group": group,
                        "seed": run["seed"],
                        "epoch": entry["epoch"],
                        "train_rmse": entry["train_rmse"],
                        "validation_rmse": entry["validation_rmse"],
                    }
                )
    columns = ["dataset", "model", "group", "seed", "epoch", "train_rmse", "validation_rmse"]
    return pd.DataFrame(rows, columns=columns), gaps


def plot_figure4(data: pd.DataFrame, path: str | os.PathLike, *, subtitle: str = "") -> Path:
    """Train (dashed) and validation (solid) RMSE per epoch; one panel per dataset."""
    fig = Figure(figsize=FIGURE4_SIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(FIGURE_DATASETS), squeeze=False)[0]
    for ax, (letter, dataset) in zip(axes, zip("ab", FIGURE_DATASETS, strict=True), strict=True):
        ax.set_title(f"({letter}) {DATASET_LABELS[dataset]}")
        panel = data[data.dataset == dataset]
        if panel.empty:
            _no_runs(ax)
            continue
        for model, lines in panel.groupby("model", sort=False):
            color, label = MODEL_COLORS.get(model), MODEL_LABELS.get(model, model)
            ax.plot(
                lines.epoch,
                lines.validation_rmse,
                "-o",
                ms=3,
                color=color,
                label=f"{label} validation",
            )
            ax.plot(lines.epoch, lines.train_rmse, "--", color=color, label=f"{label} train")
        epochs = panel.epoch.max()
        if math.isfinite(epochs) and epochs <= 20:
            ax.set_xticks(range(int(panel.epoch.min()), int(epochs) + 1))
        ax.set_xlabel("Epoch")
        ax.set_ylabel("RMSE")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    title = "Figure 4: training and validation error of each epoch"
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=13)
    return _save(fig, path)


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path

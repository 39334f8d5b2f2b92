"""The planted-redundancy experiment's tables, figures and statistics (DESIGN §8).

Uncertainty is over seeds. The AoA − plain gap is paired: seed s of AoAFM and of AFM start
from the same pre-trained FM and draw the same batch order, so the gap is taken per seed and
its mean gets a Student-t 95% interval (n − 1 degrees of freedom). "Grows with r" is the
least-squares slope of the per-seed advantage (plain − AoA) against r, with its t interval
(n − 2 degrees of freedom over the (r, seed) points).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..mechanism import PAIR_CLASSES
from .figures import MODEL_COLORS, _save
from .paper import DATASET_LABELS, MODEL_LABELS
from .records import Stat
from .tables import MISSING, Table

GROUP = "redundancy"
MODELS = ("fm", "afm", "aoafm", "ffm", "affm", "aoaffm")
AOA_PAIRS = (("aoafm", "afm"), ("aoaffm", "affm"))  # (with Q, its plain twin)
LEVEL = 0.95
METHOD = (
    "Mean ± sample std over seeds; AoA − plain: the per-seed gap (same seed, same pre-trained "
    "start and batch order), its mean with a Student-t 95% interval over seeds."
)


# --------------------------------------------------------------------------- statistics


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with ``df`` degrees of freedom (bisection on
    the CDF, the density integrated by Simpson's rule: 1e-6 accurate, no SciPy needed)."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(x: float) -> float:
        return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))

    def cdf(x: float, steps: int = 2000) -> float:
        h = x / steps
        inner = sum((4 if k % 2 else 2) * density(k * h) for k in range(1, steps))
        return 0.5 + h / 3 * (density(0.0) + inner + density(x))

    low, high = 0.0, 1.0
    while cdf(high) < p:
        low, high = high, high * 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided 95% t interval (low = high = nan below two points)."""

    estimate: float
    low: float
    high: float
    n: int

    @property
    def known(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def format(self, digits: int = 4) -> str:
        if not self.known:
            return f"{self.estimate:+.{digits}f} (n={self.n}, no interval)"
        return (
            f"{self.estimate:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] "
            f"(n={self.n})"
        )


def mean_interval(values: Sequence[float]) -> Interval | None:
    """The mean and its 95% t interval (None without values)."""
    stat = Stat.of(values)
    if stat is None:
        return None
    if not stat.has_spread:
        return Interval(stat.mean, math.nan, math.nan, stat.n)
    half = t_quantile(0.5 + LEVEL / 2, stat.n - 1) * stat.std / math.sqrt(stat.n)
    return Interval(stat.mean, stat.mean - half, stat.mean + half, stat.n)


def slope_interval(points: Sequence[tuple[float, float]]) -> Interval | None:
    """The least-squares slope of y on x and its 95% t interval (n − 2 degrees of freedom);
    None below two distinct x."""
    n = len(points)
    xs = [x for x, _ in points]
    if n < 2 or len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    if n < 3:
        return Interval(slope, math.nan, math.nan, n)
    residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in points)
    half = t_quantile(0.5 + LEVEL / 2, n - 2) * math.sqrt(residual / (n - 2) / sxx)
    return Interval(slope, slope - half, slope + half, n)


# --------------------------------------------------------------------------- selections


def runs(records: Iterable[dict]) -> list[dict]:
    return [r for r in records if r["group"] == GROUP]


def curves(records: Iterable[dict]) -> list[tuple[str, str]]:
    """The (dataset, kind) curves: every kind planted, each starting at the shared r = 0."""
    found = {(r["dataset"], r["redundancy_kind"]) for r in runs(records) if r["redundancy_kind"]}
    return sorted(found)


def curve_runs(records: Iterable[dict], dataset: str, kind: str, model: str) -> dict[int, list]:
    """A curve's runs of ``model`` by r (r = 0: the unplanted runs)."""
    by_r: dict[int, list] = {}
    for r in runs(records):
        if r["dataset"] == dataset and r["model"] == model and r["redundancy_kind"] in (kind, None):
            by_r.setdefault(int(r["redundancy_r"]), []).append(r)
    return dict(sorted(by_r.items()))


def paired(a: list[dict], b: list[dict], metric: str) -> list[float]:
    """a − b per seed, over the seeds both have."""
    other = {r["seed"]: r[metric] for r in b if r.get(metric) is not None}
    return [
        r[metric] - other[r["seed"]] for r in a if r.get(metric) is not None and r["seed"] in other
    ]


def gap(records, dataset, kind, better, plain, r, metric="test_rmse") -> Interval | None:
    """AoA − plain ``metric`` at r, paired over seeds (negative: the AoA model is better)."""
    a = curve_runs(records, dataset, kind, better).get(r, [])
    b = curve_runs(records, dataset, kind, plain).get(r, [])
    return mean_interval(paired(a, b, metric))


def advantage_slope(records, dataset, kind, better, plain, metric="test_rmse") -> Interval | None:
    """The slope against r of the per-seed advantage plain − AoA (positive: it grows)."""
    a, b = (curve_runs(records, dataset, kind, m) for m in (better, plain))
    points = [(r, -d) for r in a if r in b for d in paired(a[r], b[r], metric)]
    return slope_interval(points)


def q_difference(records, dataset, kind, model, r) -> Interval | None:
    """q on the planted copies' pairs − q on the original's pairs, per run, over seeds."""
    chosen = curve_runs(records, dataset, kind, model).get(r, [])
    diffs = [
        x["q_planted"] - x["q_original"]
        for x in chosen
        if x.get("q_planted") is not None and x.get("q_original") is not None
    ]
    return mean_interval(diffs)


# --------------------------------------------------------------------------- tables


def _interval_columns(row: dict, name: str, interval: Interval | None) -> None:
    """``name``, ``name_ci_low`` and ``name_ci_high`` of a CSV row (None where unknown)."""
    known = interval is not None and interval.known
    row[name] = interval.estimate if interval else None
    row[f"{name}_ci_low"] = interval.low if known else None
    row[f"{name}_ci_high"] = interval.high if known else None


def _shown_variant(dataset: str, kind: str | None, r: int, model: str) -> dict:
    """The Markdown columns that name a variant and model."""
    return {
        "Dataset": DATASET_LABELS.get(dataset, dataset),
        "Planted": kind if kind else "none (r = 0)",
        "r": str(r),
        "Model": MODEL_LABELS.get(model, model),
    }


def _variant_runs(records, dataset: str, kind: str | None, r: int, model: str) -> list[dict]:
    return [
        x
        for x in runs(records)
        if (x["dataset"], x["redundancy_kind"], x["redundancy_r"], x["model"])
        == (dataset, kind, r, model)
    ]


def _rows(records) -> list[tuple[str, str | None, int]]:
    """(dataset, kind, r) in display order: r = 0 once per dataset, then each kind by r."""
    keys = {(r["dataset"], r["redundancy_kind"], int(r["redundancy_r"])) for r in runs(records)}
    return sorted(keys, key=lambda k: (k[0], k[1] or "", k[2]))


def rmse_table(records: list[dict]) -> Table:
    """Validation and test RMSE per model and variant, and the AoA − plain gaps."""
    rows, shown = [], []
    twin = dict(AOA_PAIRS)
    for dataset, kind, r in _rows(records):
        for model in MODELS:
            chosen = _variant_runs(records, dataset, kind, r, model)
            if not chosen:
                continue
            val = Stat.of(x["validation_rmse"] for x in chosen)
            test = Stat.of(x["test_rmse"] for x in chosen)
            gaps = {}
            if model in twin:
                plain = _variant_runs(records, dataset, kind, r, twin[model])
                for metric in ("validation_rmse", "test_rmse"):
                    gaps[metric] = mean_interval(paired(chosen, plain, metric))
            row = {"dataset": dataset, "kind": kind or "none", "r": r, "model": model}
            for name, stat in (("validation_rmse", val), ("test_rmse", test)):
                row[f"{name}_mean"] = stat.mean
                row[f"{name}_std"] = stat.std if stat.has_spread else None
            row["n_runs"] = test.n
            for metric in ("validation_rmse", "test_rmse"):
                g = gaps.get(metric)
                _interval_columns(row, f"gap_{metric.split('_')[0]}", g)
            rows.append(row)
            shown.append(
                {
                    **_shown_variant(dataset, kind, r, model),
                    "Validation RMSE": val.format(),
                    "Test RMSE": test.format(),
                    "AoA − plain, validation [95% CI]": gaps["validation_rmse"].format()
                    if gaps.get("validation_rmse")
                    else MISSING,
                    "AoA − plain, test [95% CI]": gaps["test_rmse"].format()
                    if gaps.get("test_rmse")
                    else MISSING,
                }
            )
    return Table(
        "redundancy",
        "Planted redundancy: RMSE against the number r of planted fields",
        pd.DataFrame(rows),
        pd.DataFrame(shown),
        [
            METHOD,
            "AoA − plain: AoAFM − AFM and AoAFFM − AFFM; negative means the interaction-level "
            "weights Q helped.",
        ],
    )


def weights_table(records: list[dict]) -> Table:
    """Mean P·α and q per pair class for the attention models, per variant."""
    rows, shown = [], []
    for dataset, kind, r in _rows(records):
        for model in ("afm", "aoafm", "affm", "aoaffm"):
            chosen = [
                x
                for x in _variant_runs(records, dataset, kind, r, model)
                if x.get("alpha_original") is not None
            ]
            if not chosen:
                continue
            row = {"dataset": dataset, "kind": kind or "none", "r": r, "model": model}
            cells = {}
            for weight in ("alpha", "q"):
                for name in PAIR_CLASSES:
                    stat = Stat.of(x[f"{weight}_{name}"] for x in chosen)
                    row[f"{weight}_{name}_mean"] = stat.mean if stat else None
                    row[f"{weight}_{name}_std"] = stat.std if stat and stat.has_spread else None
                    cells[weight, name] = stat.format(3) if stat else MISSING
            diff = (
                q_difference(records, dataset, kind, model, r) if model.startswith("aoa") else None
            )
            _interval_columns(row, "q_diff", diff)
            row["n_runs"] = len(chosen)
            rows.append(row)
            shown.append(
                {
                    **_shown_variant(dataset, kind, r, model),
                    **{f"P·α {n}": cells["alpha", n] for n in ("original", "planted", "other")},
                    **{f"q {n}": cells["q", n] for n in ("original", "planted", "other")},
                    "q planted − original [95% CI]": diff.format(3) if diff else MISSING,
                }
            )
    return Table(
        "redundancy_weights",
        "Planted redundancy: learned attention per field-pair class",
        pd.DataFrame(rows),
        pd.DataFrame(shown),
        [
            "Pairs: original = (source field, g), planted = (planted copy, g) for the same "
            "original fields g, other = pairs of two other original fields.",
            "P·α: the feature-level attention α averaged over the validation rows, times the "
            "number of pairs P (1 = a uniform share). q: the interaction-level weight (1 for "
            "AFM and AFFM, which have no Q). q_diff (CSV): q planted − q original per run, "
            "its mean and 95% t interval over seeds.",
            METHOD,
        ],
    )


# --------------------------------------------------------------------------- figures

DPI = 100


def _empty(ax, text: str = "no planted-redundancy runs") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", color="gray", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _label_axes(ax, dataset: str, kind: str, ylabel: str) -> None:
    ax.set_title(f"{DATASET_LABELS.get(dataset, dataset)}, {kind} copies")
    ax.set_xlabel("Planted fields r")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # r counts fields
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_rmse(records: list[dict], path: str | os.PathLike, *, subtitle: str = "") -> Path:
    """Per curve: test RMSE against r per model (± std), and the AoA − plain gaps (95% CI)."""
    found = curves(records) or [("", "")]
    fig = Figure(figsize=(max(9.0, 5.5 * len(found)), 8.0), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, len(found), squeeze=False)
    for col, (dataset, kind) in enumerate(found):
        top, bottom = axes[0][col], axes[1][col]
        if not dataset:
            _empty(top)
            _empty(bottom)
            continue
        for model in MODELS:
            by_r = curve_runs(records, dataset, kind, model)
            stats = {r: Stat.of(x["test_rmse"] for x in xs) for r, xs in by_r.items()}
            if stats:
                top.errorbar(
                    list(stats),
                    [s.mean for s in stats.values()],
                    yerr=[s.std if s.has_spread else 0.0 for s in stats.values()],
                    marker="o",
                    capsize=3,
                    color=MODEL_COLORS[model],
                    label=MODEL_LABELS.get(model, model),
                )
        _label_axes(top, dataset, kind, "Test RMSE (mean ± std over seeds)")
        for offset, (better, plain) in zip((-0.05, 0.05), AOA_PAIRS, strict=True):
            rs = sorted(set(curve_runs(records, dataset, kind, better)))
            gaps = {r: gap(records, dataset, kind, better, plain, r) for r in rs}
            gaps = {r: g for r, g in gaps.items() if g is not None}
            if not gaps:
                continue
            lows = [g.estimate - g.low if g.known else 0.0 for g in gaps.values()]
            highs = [g.high - g.estimate if g.known else 0.0 for g in gaps.values()]
            bottom.errorbar(
                [r + offset for r in gaps],
                [g.estimate for g in gaps.values()],
                yerr=[lows, highs],
                marker="s",
                capsize=3,
                color=MODEL_COLORS[better],
                label=f"{MODEL_LABELS[better]} − {MODEL_LABELS[plain]}",
            )
        bottom.axhline(0.0, color="black", lw=0.8)
        _label_axes(bottom, dataset, kind, "Test RMSE gap, AoA − plain (95% CI)")
    title = "Planted redundancy: RMSE and the interaction-level attention's gain against r"
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=12)
    return _save(fig, path)


def plot_weights(records: list[dict], path: str | os.PathLike, *, subtitle: str = "") -> Path:
    """Per curve: P·α of the original's and the planted copies' pairs against r (top), and
    q of the same pairs for the AoA models (bottom); mean ± std over seeds."""
    found = curves(records) or [("", "")]
    fig = Figure(figsize=(max(9.0, 5.5 * len(found)), 8.0), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, len(found), squeeze=False)
    panels = (("alpha", ("afm", "aoafm", "affm", "aoaffm"), "P·α (1 = uniform share)"),
              ("q", ("aoafm", "aoaffm"), "Interaction-level weight q"))  # fmt: skip
    for col, (dataset, kind) in enumerate(found):
        for row, (weight, models, ylabel) in enumerate(panels):
            ax = axes[row][col]
            if not dataset:
                _empty(ax)
                continue
            drawn = False
            for model in models:
                by_r = curve_runs(records, dataset, kind, model)
                for name, style in (("original", "-"), ("planted", "--")):
                    stats = {
                        r: Stat.of(
                            x[f"{weight}_{name}"]
                            for x in xs
                            if x.get(f"{weight}_{name}") is not None
                        )
                        for r, xs in by_r.items()
                    }
                    stats = {r: s for r, s in stats.items() if s is not None}
                    if not stats:
                        continue
                    drawn = True
                    ax.errorbar(
                        list(stats),
                        [s.mean for s in stats.values()],
                        yerr=[s.std if s.has_spread else 0.0 for s in stats.values()],
                        fmt="o" + style,
                        capsize=3,
                        color=MODEL_COLORS[model],
                        label=f"{MODEL_LABELS[model]}, {name} pairs",
                    )
            if not drawn:
                _empty(ax, "no attention weights")
                continue
            _label_axes(ax, dataset, kind, ylabel)
    title = (
        "Planted redundancy: attention on the source field's pairs (solid) and its copies' (dashed)"
    )
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=12)
    return _save(fig, path)

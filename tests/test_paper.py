"""Verdicts against the paper: each reproduced RMSE of Tables 2-4, one test per cell.

Judges every published reproduction (``reports/published/<profile>/runs.json``, committed)
and, after a full `dvc repro` with profile: paper, the fresh ``results/runs.json``. Select
with ``pytest -m paper`` (the default run leaves these out: a cell that misses the paper is a
finding to report, not a broken build). Cells of a dataset the profile does not cover, and
cells without runs, are skipped with the reason.

The tolerance comes from the seed spread we measured, not from the paper. A cell passes when
ours ≤ paper + 3 σ √(1/n + 1/m): the one-sided 3-sigma band of the difference between our
mean of n runs and the paper's mean of m runs if both were draws of the same run-to-run
noise σ (Table 2: m = 10, the paper's "mean of 10 runs"; Tables 3 and 4: m = 1, single
runs). σ is the cell's own seed standard deviation when it has n ≥ 2 runs, else the pooled
(root-mean-square) standard deviation of the same dataset's Table 2 cells, the measured noise
of one run of a sibling model. Lower than the paper is a pass ("or better"). Without any
measured spread a cell is not judged.
"""

from __future__ import annotations

import math

import pytest
from conftest import REPO_ROOT

from aoaffm.io import read_json
from aoaffm.report import read_records, table_cell
from aoaffm.report.paper import paper_cells

PUBLISHED = REPO_ROOT / "reports" / "published"
FRESH = REPO_ROOT / "results"
PAPER_RUNS = {"table2": 10, "table3": 1, "table4": 1}
SIGMAS = 3


def sources() -> list[tuple[str, object]]:
    """(name, folder) of every reproduction to judge: published ones, then a fresh paper run."""
    found = []
    for folder in sorted(PUBLISHED.glob("*/")) if PUBLISHED.is_dir() else []:
        if (folder / "runs.json").is_file() and (folder / "environment.json").is_file():
            found.append((f"published-{folder.name}", folder))
    if (FRESH / "runs.json").is_file() and (FRESH / "environment.json").is_file():
        if read_json(FRESH / "environment.json").get("profile") == "paper":
            found.append(("results-paper", FRESH))
    return found


def pooled_std(records: list[dict], dataset: str) -> float | None:
    """RMS of the seed standard deviations of the dataset's Table 2 cells (n >= 2 only)."""
    variances = []
    for table, d, model, _ in paper_cells():
        cell = table_cell(records, table, d, model) if table == "table2" and d == dataset else None
        if cell is not None and cell.stat.n >= 2:
            variances.append(cell.stat.std**2)
    return math.sqrt(sum(variances) / len(variances)) if variances else None


def tolerance(table: str, stat, pooled: float | None) -> float | None:
    sigma = stat.std if stat.n >= 2 else pooled
    if sigma is None or not math.isfinite(sigma):
        return None
    return SIGMAS * sigma * math.sqrt(1 / stat.n + 1 / PAPER_RUNS[table])


def _cases() -> list:
    cases = []
    for name, folder in sources():
        records = read_records(folder / "runs.json")
        covered = {r["dataset"] for r in records}
        for table, dataset, model, paper in paper_cells():
            case_id = f"{name}-{table}-{dataset}-{model}"
            cell = table_cell(records, table, dataset, model)
            reason = None
            if dataset not in covered:
                reason = f"{name} does not cover {dataset} (not run)"
            elif cell is None:
                reason = f"{name}: no {table} runs of {model} on {dataset}"
            tol = (
                None if cell is None else tolerance(table, cell.stat, pooled_std(records, dataset))
            )
            if reason is None and tol is None:
                reason = f"{name}: no seed spread measured on {dataset}; cannot judge {model}"
            marks = pytest.mark.skip(reason=reason) if reason else ()
            cases.append(pytest.param(table, paper, cell, tol, marks=marks, id=case_id))
    if not cases:
        reason = "no reproduction to judge: nothing under reports/published/, no paper results/"
        return [pytest.param(None, None, None, None, marks=pytest.mark.skip(reason=reason))]
    return cases


@pytest.mark.paper
@pytest.mark.parametrize(("table", "paper", "cell", "tol"), _cases())
def test_reproduced_rmse_is_the_papers_or_better(table, paper, cell, tol):
    stat = cell.stat
    assert math.isfinite(stat.mean), f"non-finite RMSE {stat.mean} in {cell.group}"
    assert stat.mean - paper <= tol, (
        f"{table}: ours {stat.format()} vs paper {paper:.4f}: {stat.mean - paper:+.4f} is "
        f"more than the tolerance {tol:.4f} above it"
    )


def test_tolerance_rule():
    """The rule itself (runs without results)."""
    from aoaffm.report.records import Stat

    # own spread over 3 seeds against the paper's 10
    assert tolerance("table2", Stat(0.3, 0.002, 3), None) == pytest.approx(
        3 * 0.002 * math.sqrt(1 / 3 + 1 / 10)
    )
    # a single run borrows the pooled spread; the paper's Table 3 value is a single run too
    assert tolerance("table3", Stat(0.3, math.nan, 1), 0.002) == pytest.approx(
        3 * 0.002 * math.sqrt(2)
    )
    assert tolerance("table3", Stat(0.3, math.nan, 1), None) is None

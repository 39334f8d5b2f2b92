"""Exact parameter counts beside the paper's Table 3 (#param column, K = 256, t = 256).

Models are built on PyTorch's "meta" device: shapes without memory, so even the 69.6M-scalar
MovieLens AoAFFM costs nothing to count. The counts are of the architecture in the paper
(batch norm off); ``params_batch_norm`` adds batch norm's scale and shift, which a run with
``batch_norm: true`` reports.

The paper's numbers come from ``aoaffm.report.paper`` (Tables 1 and 3 as data). This table
is the report's, not the models': editing it re-runs no training stage. A count
agrees when it lies within one unit of the paper's last printed digit (0.01M).
Where it agrees without rounding to the paper's value, or does not agree, the row says why.
"""

from __future__ import annotations

import os

import torch
from tabulate import tabulate

from aoaffm.io import write_text
from aoaffm.models import count_parameters, create
from aoaffm.report.paper import TABLE1, TABLE3

TABLE3_DATASETS = ("movielens", "frappe")
TABLE3_MODELS = ("fm", "hofm", "wide_deep", "deepcross", "ffm", "afm", "aoafm", "affm", "aoaffm")


def paper_dataset_sizes() -> dict[str, tuple[int, int]]:
    """(#features, #fields) of each dataset as the paper's Table 1 prints them."""
    return {row.dataset: (row.features, row.fields) for row in TABLE1}


def paper_param_counts() -> dict[str, dict[str, str]]:
    """Table 3's "#param" as printed, in millions without the "M": {dataset: {model: "1.38"}}."""
    counts: dict[str, dict[str, str]] = {}
    for row in TABLE3:
        counts.setdefault(row.dataset, {})[row.model] = row.params_printed.rstrip("M")
    return counts


def exact_count(
    model: str, dataset: str, embedding_size: int = 256, attention_size: int = 256, **hparams
) -> int:
    """Parameters of ``model`` built for ``dataset``'s Table 1 sizes (on the meta device)."""
    n_features, n_fields = paper_dataset_sizes()[dataset]
    with torch.device("meta"):
        built = create(
            model,
            n_features,
            n_fields,
            embedding_size,
            attention_size=attention_size,
            **hparams,
        )
    return count_parameters(built)


def _millions(count: int, decimals: int, *, truncate: bool = False) -> str:
    scale = 10 ** (6 - decimals)
    whole = count // scale if truncate else (2 * count + scale) // (2 * scale)  # half up
    return f"{whole / 10**decimals:.{decimals}f}"


def _note(row: dict, rows: list[dict], decimals: int, unit: int, paper_count: int) -> str:
    count, paper = row["params"], row["paper"]
    if row["ours"] == paper:
        return ""
    if row["agrees"]:
        how = (
            "truncated"
            if _millions(count, decimals, truncate=True) == paper
            else "rounded differently"
        )
        return f"{count / 1e6:.4f}M rounds to {row['ours']}M; the paper's {paper}M is within one unit ({how})"
    note = f"off by {abs(count - paper_count):,} (> {unit:,}, one unit of the last digit)"
    if row["model"] == "aoafm":  # AoAFM is AFM plus one q per field pair
        afm = next(r for r in rows if r["dataset"] == row["dataset"] and r["model"] == "afm")
        n_fields = paper_dataset_sizes()[row["dataset"]][1]
        n_pairs = n_fields * (n_fields - 1) // 2
        afm_paper_count = round(float(afm["paper"]) * 10**decimals) * unit
        note += (
            f"; AoAFM is AFM plus {n_pairs} scalars q_ij (ours {afm['params']:,} + {n_pairs}), "
            f"but the paper's AFM {afm['paper']}M and AoAFM {paper}M imply a gap of more than "
            f"{paper_count - afm_paper_count - unit:,} whether it rounded or truncated: "
            "its two values are inconsistent with each other"
        )
    return note


def parameter_rows(embedding_size: int = 256, attention_size: int = 256) -> list[dict]:
    """One row per (dataset, model): exact count, with batch norm, the paper's value, agreement."""
    rows: list[dict] = []
    paper_counts = paper_param_counts()
    for dataset in TABLE3_DATASETS:
        for model in TABLE3_MODELS:
            count = exact_count(model, dataset, embedding_size, attention_size)
            paper = paper_counts[dataset].get(model)
            row = {
                "dataset": dataset,
                "model": model,
                "params": count,
                "params_batch_norm": exact_count(
                    model, dataset, embedding_size, attention_size, batch_norm=True
                ),
                "paper": paper,
                "ours": None,
                "agrees": None,
                "note": "not in the paper's Table 3",
            }
            if paper is not None:
                decimals = len(paper.split(".")[1])
                unit = 10 ** (6 - decimals)
                paper_count = round(float(paper) * 10**decimals) * unit
                row["ours"] = _millions(count, decimals)
                row["agrees"] = abs(count - paper_count) <= unit
                row["note"] = _note(row, rows, decimals, unit, paper_count)
            rows.append(row)
    return rows


def parameter_table(
    path: str | os.PathLike = "reports/params.md",
    embedding_size: int = 256,
    attention_size: int = 256,
) -> list[dict]:
    """Write the reconciliation table as Markdown (atomically) and return its rows."""
    rows = parameter_rows(embedding_size, attention_size)
    body = tabulate(
        [
            [
                r["dataset"],
                r["model"],
                f"{r['params']:,}",
                f"{r['params_batch_norm']:,}",
                f"{r['ours']}M" if r["ours"] else "—",
                f"{r['paper']}M" if r["paper"] else "—",
                {True: "yes", False: "no", None: "—"}[r["agrees"]],
                r["note"],
            ]
            for r in rows
        ],
        headers=[
            "dataset",
            "model",
            "params (exact)",
            "with batch norm",
            "ours",
            "paper",
            "agrees",
            "note",
        ],
        tablefmt="github",
        colalign=("left", "left", "right", "right", "right", "right", "left", "left"),
    )
    text = (
        f"# Parameter counts (K = {embedding_size}, t = {attention_size}) against the paper's Table 3\n\n"
        "Exact counts of the models as built by `aoaffm.models.create` (batch norm off, as in the\n"
        "paper's architectures); *with batch norm* adds its learnable scale and shift. *Agrees*:\n"
        "within one unit of the paper's last printed digit (0.01M). Generated by\n"
        "`aoaffm.report.params.parameter_table`.\n\n" + body + "\n"
    )
    write_text(path, text)
    return rows

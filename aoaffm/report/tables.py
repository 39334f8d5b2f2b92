"""Tables 1-4: the paper's value beside ours and the difference, as Markdown and CSV.

Each builder returns a :class:`Table` holding a numeric frame (written as CSV) and a
display frame of formatted strings (written as Markdown through tabulate).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from ..errors import UnreadableFile
from ..io import atomic_path, write_text
from .paper import (
    DATASET_LABELS,
    MODEL_LABELS,
    TABLE1,
    TABLE2,
    TABLE3,
    TABLE4,
)
from .records import distinct, table_cell

MISSING = "—"
DIFF_NOTE = "Δ = ours − paper; RMSE is lower-is-better, so a positive Δ means ours is worse."
SPREAD_NOTE = "Ours: mean ± sample standard deviation over seeds (n runs); no ± for one run."


@dataclass
class Table:
    name: str
    title: str
    data: pd.DataFrame  # numeric, for the CSV
    display: pd.DataFrame  # formatted strings, for the Markdown
    notes: list[str] = field(default_factory=list)


def _label(mapping: dict, key: str) -> str:
    return mapping.get(key, key)


def _int(value) -> str:
    return MISSING if value is None else f"{int(value):,}"


def _diff(ours: float | None, paper: float | None, digits: int = 4) -> str:
    if ours is None or paper is None or not math.isfinite(ours):
        return MISSING
    diff = ours - paper
    return f"{diff:+.{digits}f} ({diff / paper:+.1%})"


def _rmse_columns(cell, paper_value: float) -> dict:
    """The numeric RMSE columns shared by Tables 2-4."""
    stat = cell.stat if cell else None
    return {
        "rmse_paper": paper_value,
        "rmse_ours_mean": stat.mean if stat else None,
        "rmse_ours_std": stat.std if stat and stat.has_spread else None,
        "n_runs": stat.n if stat else 0,
        "diff": stat.mean - paper_value if stat else None,
    }


def _rmse_display(cell, paper_value: float) -> dict:
    return {
        "RMSE paper": f"{paper_value:.4f}",
        "RMSE ours": cell.stat.format() if cell else "not run",
        "Δ (ours − paper)": _diff(cell.stat.mean if cell else None, paper_value),
    }


def _meta_value(meta: Mapping, key: str, dataset: str):
    if key not in meta:
        raise UnreadableFile(
            f"meta.json of dataset {dataset!r}: missing key {key!r}; rerun its preprocess stage"
        )
    return meta[key]


def table1(metas: Mapping[str, Mapping]) -> Table:
    """Dataset statistics from the processed datasets' meta.json, beside the paper's."""
    by_dataset = {str(m.get("dataset", name)).lower(): m for name, m in metas.items()}
    rows, shown = [], []
    paper = {s.dataset: s for s in TABLE1}
    for dataset in [*paper, *(d for d in by_dataset if d not in paper)]:
        stats, meta = paper.get(dataset), by_dataset.get(dataset)
        ours = {}
        if meta is not None:
            for key in ("instances", "features", "fields"):
                ours[key] = int(_meta_value(meta, key, dataset))
            avg = meta.get("avg_features_per_field")
            ours["avg"] = float(avg) if avg is not None else ours["features"] / ours["fields"]
        notes = [stats.note] if stats and stats.note else []
        if meta is None:
            notes.append("not processed in this run")
        elif stats and (ours["instances"], ours["features"], ours["fields"]) != (
            stats.data_instances,
            stats.features,
            stats.fields,
        ):
            notes.append(f"our data (variant {meta.get('variant', '?')!r}) is not the paper's")

        def diff(key, paper_value, ours=ours):
            return ours[key] - paper_value if key in ours and paper_value is not None else None

        p = (
            (stats.instances, stats.features, stats.fields, stats.avg_printed)
            if stats
            else (None,) * 4
        )
        rows.append(
            {
                "dataset": dataset,
                "variant": meta.get("variant") if meta else None,
                "instances_paper": p[0],
                "instances_ours": ours.get("instances"),
                "instances_diff": diff("instances", p[0]),
                "features_paper": p[1],
                "features_ours": ours.get("features"),
                "features_diff": diff("features", p[1]),
                "fields_paper": p[2],
                "fields_ours": ours.get("fields"),
                "avg_paper": p[3],
                "avg_ours": round(ours["avg"], 1) if "avg" in ours else None,
                "note": " ".join(notes),
            }
        )
        r = rows[-1]
        shown.append(
            {
                "Dataset": _label(DATASET_LABELS, dataset),
                "Variant": r["variant"] or MISSING,
                "#Instances paper": _int(r["instances_paper"]),
                "#Instances ours": _int(r["instances_ours"]),
                "Δ instances": MISSING
                if r["instances_diff"] is None
                else f"{r['instances_diff']:+,}",
                "#Features paper": _int(r["features_paper"]),
                "#Features ours": _int(r["features_ours"]),
                "Δ features": MISSING if r["features_diff"] is None else f"{r['features_diff']:+,}",
                "#Fields paper": _int(r["fields_paper"]),
                "#Fields ours": _int(r["fields_ours"]),
                "Avg. paper": _int(r["avg_paper"]),
                "Avg. ours": MISSING if r["avg_ours"] is None else f"{r['avg_ours']:,.1f}",
                "Note": r["note"],
            }
        )
    return Table(
        "table1",
        "Table 1: statistics of the datasets",
        _frame(
            rows,
            ints=(
                "instances_ours",
                "instances_diff",
                "features_ours",
                "features_diff",
                "fields_ours",
            ),
        ),
        pd.DataFrame(shown),
        [
            "Avg. = #features / #fields (the paper prints it rounded to an integer).",
            "Ours are read from each processed dataset's meta.json.",
        ],
    )


def table2(records: list[dict]) -> Table:
    """Mean validation RMSE of the attention family over seeds, with the settings used."""
    rows, shown = [], []
    for p in TABLE2:
        cell = table_cell(records, "table2", p.dataset, p.model)
        runs = cell.records if cell else ()
        rows.append(
            {
                "dataset": p.dataset,
                "model": p.model,
                "embedding_size_paper": p.embedding_size,
                "dropout_paper": p.dropout,
                "lambda_paper": p.lam,
                "embedding_size_ours": distinct(runs, "embedding_size"),
                "dropout_ours": distinct(runs, "dropout"),
                "lambda_ours": distinct(runs, "lambda"),
                "learning_rate_ours": distinct(runs, "learning_rate"),
                **_rmse_columns(cell, p.validation_rmse),
            }
        )
        r = rows[-1]
        ours = " / ".join(
            r[f"{k}_ours"] or MISSING for k in ("embedding_size", "dropout", "lambda")
        )
        shown.append(
            {
                "Dataset": _label(DATASET_LABELS, p.dataset),
                "Model": _label(MODEL_LABELS, p.model),
                "K / dropout / λ paper": f"{p.embedding_size} / {p.dropout:g} / {p.lam:g}",
                "K / dropout / λ ours": ours if cell else MISSING,
                "lr ours": r["learning_rate_ours"] or MISSING,
                **_rmse_display(cell, p.validation_rmse),
            }
        )
    return Table(
        "table2",
        "Table 2: attention-over-attention vs AFM's attention (validation RMSE)",
        _frame(rows),
        pd.DataFrame(shown),
        [
            "Paper: mean validation RMSE of ten runs. Ours: the table2 runs (one per seed).",
            SPREAD_NOTE,
            DIFF_NOTE,
        ],
    )


def _params_agree(ours: list[int], row, embedding_sizes: str) -> bool | None:
    """None where not comparable: several counts, or runs at another K than the paper's 256."""
    if len(ours) != 1 or embedding_sizes != "256":
        return None
    return abs(ours[0] - row.params) <= row.params_unit * (1 + 1e-9)


def _start(cell) -> str | None:
    """Where the cell's runs start: "FM" / "FFM" (pre-trained embeddings) or "random"."""
    if cell is None:
        return None
    starts = {r.get("pretrained_from") for r in cell.records}
    return ", ".join(sorted(MODEL_LABELS.get(s, s) if s else "random" for s in starts))


def table3(records: list[dict]) -> Table:
    """Test RMSE and #params at K = 256 on MovieLens and Frappe."""
    rows, shown = [], []
    for p in TABLE3:
        cell = table_cell(records, "table3", p.dataset, p.model)
        params = (
            sorted({int(r["params"]) for r in cell.records if r.get("params") is not None})
            if cell
            else []
        )
        sizes = distinct(cell.records if cell else (), "embedding_size")
        agree = _params_agree(params, p, sizes)
        rows.append(
            {
                "dataset": p.dataset,
                "model": p.model,
                "params_paper": p.params_printed,
                "params_ours": params[0] if len(params) == 1 else None,
                "params_agree": agree,
                "embedding_size_ours": sizes,
                "learning_rate_ours": distinct(cell.records if cell else (), "learning_rate"),
                "start_ours": _start(cell),
                **_rmse_columns(cell, p.test_rmse),
                "source_group": cell.group if cell else None,
            }
        )
        shown.append(
            {
                "Dataset": _label(DATASET_LABELS, p.dataset),
                "Model": _label(MODEL_LABELS, p.model),
                "#params paper": p.params_printed,
                "#params ours": ", ".join(f"{n:,} ({n / 1e6:.2f}M)" for n in params) or MISSING,
                "#params agree": {True: "yes", False: "no", None: MISSING}[agree],
                "K ours": rows[-1]["embedding_size_ours"] or MISSING,
                "lr ours": rows[-1]["learning_rate_ours"] or MISSING,
                "start": rows[-1]["start_ours"] or MISSING,
                **_rmse_display(cell, p.test_rmse),
                "Runs": cell.group if cell else MISSING,
            }
        )
    return Table(
        "table3",
        "Table 3: test RMSE and #params at K = 256",
        _frame(rows, ints=("params_ours",)),
        pd.DataFrame(shown),
        [
            "AFM, AoAFM and AoAFFM: the table2 runs' test RMSE (mean ± std over seeds); the "
            "other models: the table3 runs ('Runs' names the group).",
            "start: the embeddings a run starts from, the pre-trained FM or FFM (the paper's "
            "protocol for the attention models and, as it says, the compared algorithms) or "
            "random.",
            "#params agree: our exact count is within one unit of the paper's last printed "
            "digit (the paper rounds to 0.01M); only judged for runs at the paper's K = 256.",
            SPREAD_NOTE,
            DIFF_NOTE,
        ],
    )


def table4(records: list[dict]) -> Table:
    """Criteo test RMSE with the paper's per-model settings."""
    rows, shown = [], []
    for p in TABLE4:
        cell = table_cell(records, "table4", p.dataset, p.model)
        runs = cell.records if cell else ()
        rows.append(
            {
                "dataset": p.dataset,
                "model": p.model,
                "settings_paper": p.settings,
                "embedding_size_ours": distinct(runs, "embedding_size"),
                "batch_size_ours": distinct(runs, "batch_size"),
                "learning_rate_ours": distinct(runs, "learning_rate"),
                **_rmse_columns(cell, p.test_rmse),
            }
        )
        r = rows[-1]
        shown.append(
            {
                "Model": _label(MODEL_LABELS, p.model),
                "Settings paper": p.settings,
                "Settings ours": (
                    f"K={r['embedding_size_ours']}, bs={r['batch_size_ours']}, "
                    f"lr={r['learning_rate_ours'] or MISSING}"
                    if cell
                    else MISSING
                ),
                **_rmse_display(cell, p.test_rmse),
            }
        )
    return Table(
        "table4",
        "Table 4: test RMSE on Criteo",
        _frame(rows),
        pd.DataFrame(shown),
        [SPREAD_NOTE, DIFF_NOTE],
    )


def _frame(rows: list[dict], ints: tuple[str, ...] = ()) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for col in ints:  # nullable integers, so a missing count does not turn the column to floats
        frame[col] = frame[col].astype("Int64")
    return frame


def markdown(table: Table, *, level: int = 1, banner: str = "") -> str:
    """The table as a Markdown section: heading, banner, table and notes."""
    parts = [f"{'#' * level} {table.title}", ""]
    if banner:
        parts += [banner, ""]
    parts.append(
        tabulate(
            table.display, headers="keys", tablefmt="github", showindex=False, disable_numparse=True
        )
    )
    if table.notes:
        parts += ["", *(f"- {note}" for note in table.notes)]
    return "\n".join(parts) + "\n"


def write_table(table: Table, folder: str | os.PathLike, *, profile: str, banner: str = "") -> dict:
    """Write ``<name>.md`` and ``<name>.csv`` (every CSV row names the profile)."""
    folder = Path(folder)
    md, csv = folder / f"{table.name}.md", folder / f"{table.name}.csv"
    write_text(md, markdown(table, banner=banner))
    with atomic_path(csv) as tmp:
        table.data.assign(profile=profile).to_csv(tmp, index=False, float_format="%.6g")
    return {f"{table.name}_md": md, f"{table.name}_csv": csv}

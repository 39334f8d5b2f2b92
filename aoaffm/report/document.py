"""The report's entry points: ``build_report`` (tables, figures, REPORT.md) and
``metrics_summary`` (the small flat metrics file for ``dvc metrics show``)."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from tabulate import tabulate

from ..errors import UnreadableFile
from ..io import atomic_dir, read_json, write_json, write_text
from ..labels import criteo_scale_evidence
from . import redundancy, tables
from .claims import NOT_EVALUABLE, NOT_REPRODUCED, REPRODUCED, SPREAD_RULE, evaluate_claims
from .figures import (
    FIGURE_DATASETS,
    SWEEPS,
    figure3_data,
    figure4_data,
    plot_figure3,
    plot_figure4,
)
from .paper import DATASET_LABELS, FIGURES_NOTE, MODEL_LABELS, TABLE4, paper_cells
from .pretrained_start import plot_start, start_curves, start_section, start_table
from .records import table_cell, validate_records

PAPER_PROFILE = "paper"


# Profiles that run the paper's protocol on part of its data: what they leave out is
# "not run", not a failure.
PARTIAL_PROFILES = {
    "frappe": "the paper's protocol on Frappe only (NFM's own validation and test rows, the "
    "train split rebuilt from the raw log): Table 1's Frappe row, Table 2's Frappe cells, "
    "Table 3's Frappe column, Figure 3 (d)-(f) and Figure 4 (b)",
}


def _banner(profile: str) -> str:
    if profile == PAPER_PROFILE:
        return ""
    if profile in PARTIAL_PROFILES:
        return (
            f"> **Profile `{profile}`: {PARTIAL_PROFILES[profile]}.** Cells of other datasets "
            "are marked *not run*: this profile does not cover them."
        )
    return (
        f"> **{profile.capitalize()}-profile output (profile `{profile}`): these are NOT the "
        "paper's protocol numbers.** Smaller models, fewer epochs and seeds and stand-in data "
        "exercise the whole pipeline; compare them with the paper for shape, not for value."
    )


def _subtitle(profile: str) -> str:
    if profile == PAPER_PROFILE:
        return "profile: paper"
    if profile in PARTIAL_PROFILES:
        return f"profile: {profile} — the paper's protocol on {profile.capitalize()} only"
    return f"profile: {profile} — NOT the paper's protocol numbers"


def _md_table(rows: list[dict]) -> str:
    return tabulate(rows, headers="keys", tablefmt="github", disable_numparse=True)


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _claims_section(results) -> str:
    counts = Counter(r.status for r in results)
    rows = [
        {
            "Claim": f"**{r.claim.rq}** {r.claim.text}",
            "Source": r.claim.source,
            "Status": r.status,
            "Beyond seed spread": r.beyond_spread,
            "Evidence": "<br>".join(r.to_dict()["evidence"]) or "—",
        }
        for r in results
    ]
    return "\n".join(
        [
            "## Claims checklist",
            "",
            f"{counts[REPRODUCED]} reproduced, {counts[NOT_REPRODUCED]} not reproduced, "
            f"{counts[NOT_EVALUABLE]} not evaluable (of {len(results)}).",
            "",
            "- A claim is *reproduced* when every comparison it makes holds on our mean RMSE, "
            "*not reproduced* when one fails, *not evaluable* when a run it needs is missing "
            "(or the claim is a qualitative reading of a figure).",
            f"- {SPREAD_RULE}",
            "- Tables 2-4's cells are read as in the tables above; Figure 3's claims use the "
            "mean validation RMSE over seeds per swept value.",
            "",
            _md_table(rows),
        ]
    )


def _millions(value) -> str:
    """A count in millions as the paper prints it ("23.24" -> "23.24M"); exact ints as is."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        return f"{value}M"
    return _fmt(value)


def _param_section(param_rows: Iterable[Mapping]) -> str:
    """Rows {model, dataset, ours, paper, agrees, note}; optional exact counts are shown too."""
    param_rows = list(param_rows)
    extra = [
        (key, label)
        for key, label in (("params", "Exact"), ("params_batch_norm", "Exact with batch norm"))
        if any(key in r for r in param_rows)
    ]
    rows = [
        {
            "Model": MODEL_LABELS.get(str(r.get("model")), r.get("model")),
            "Dataset": DATASET_LABELS.get(str(r.get("dataset")), r.get("dataset")),
            **{label: _fmt(r.get(key)) for key, label in extra},
            "Ours": _millions(r.get("ours")),
            "Paper": _millions(r.get("paper")),
            "Agrees": _fmt(r.get("agrees")),
            "Note": r.get("note") or "",
        }
        for r in param_rows
    ]
    body = _md_table(rows) if rows else "No parameter counts were supplied."
    return (
        "## Parameter counts\n\nExact counts of our models beside the paper's Table 3.\n\n" + body
    )


def _environment_section(environment: Mapping | None, records: list[dict]) -> str:
    lines = ["## Environment", ""]
    if environment:
        lines.append(_md_table([{"Item": k, "Value": _fmt(v)} for k, v in environment.items()]))
    else:
        lines.append("No environment was recorded (results/environment.json missing).")
    devices = Counter(str(r.get("device")) for r in records if r.get("device"))
    if devices:
        used = ", ".join(f"{d} ({n} runs)" for d, n in devices.most_common())
        lines += ["", f"Devices the runs trained on: {used}."]
    return "\n".join(lines)


def _provenance_section(metas: Mapping[str, Mapping]) -> str:
    files, splits = [], []
    for name, meta in metas.items():
        dataset = DATASET_LABELS.get(str(meta.get("dataset", name)), name)
        for file, source in (meta.get("sources") or {}).items():
            source = source or {}
            files.append(
                {
                    "Dataset": dataset,
                    "Variant": meta.get("variant") or "—",
                    "File": file,
                    "sha256": f"`{source.get('sha256')}`" if source.get("sha256") else "—",
                    "Verified": _fmt(source.get("verified")),
                    "URL": source.get("url") or "—",
                }
            )
        sizes = meta.get("split_sizes") or {}
        splits.append(
            {
                "Dataset": dataset,
                "Train": _fmt(sizes.get("train")),
                "Validation": _fmt(sizes.get("validation")),
                "Test": _fmt(sizes.get("test")),
                "Positives": _fmt(meta.get("positives")),
                "Negatives": _fmt(meta.get("negatives")),
                "Seed": str(meta.get("seed", "—")),
            }
        )
    lines = ["## Data provenance", ""]
    if not metas:
        return "\n".join(lines + ["No processed dataset was described (no meta.json)."])
    lines += [
        "Source files and their SHA-256 digests as recorded in each processed dataset's "
        "meta.json; *Verified* says whether the digest matched a published checksum (otherwise "
        "it is the digest we saw).",
        "",
        _md_table(files) if files else "No sources recorded.",
        "",
        _md_table(splits),
    ]
    return "\n".join(lines)


def _lr_search_section(records: list[dict]) -> str:
    """The learning-rate search's validation RMSE per model and rate, the winner in bold."""
    tuned = [r for r in records if r["group"] == "tune"]
    if not tuned:
        return (
            "## Learning-rate search\n\nNot run (`lr_search.enabled` is off in this profile): "
            "each model trained at the rate params.yaml gives it (the tables' lr column)."
        )
    rates = sorted({r["learning_rate"] for r in tuned})
    rows = []
    for dataset, model in dict.fromkeys((r["dataset"], r["model"]) for r in tuned):
        scores = {
            r["learning_rate"]: r["validation_rmse"]
            for r in tuned
            if r["dataset"] == dataset and r["model"] == model
        }
        best = min(scores, key=lambda lr: (scores[lr], rates.index(lr)))
        row = {"Dataset": DATASET_LABELS[dataset], "Model": MODEL_LABELS.get(model, model)}
        for lr in rates:
            text = f"{scores[lr]:.4f}" if lr in scores else "—"
            row[f"lr {lr:g}"] = f"**{text}**" if lr == best else text
        rows.append(row)
    return (
        "## Learning-rate search\n\nValidation RMSE of each model at each rate of the grid "
        "(first seed); the bold rate is the one every later run of the model uses.\n\n"
        + _md_table(rows)
    )


def _criteo_labels_note(metas: Mapping[str, Mapping]) -> str:
    """Table 4's label scale and the evidence, with the rate of the Criteo this report used."""
    return criteo_scale_evidence(tuple(r.test_rmse for r in TABLE4), metas.get("criteo"))


def _redundancy_section(records, built, results, settings: Mapping | None) -> str:
    """The planted-redundancy experiment: design, tables, figures and its claims' verdicts."""
    runs = redundancy.runs(records)
    head = "## Planted redundancy: the paper's mechanism on controlled data"
    if not runs:
        return f"{head}\n\nNot run in this profile (`redundancy.datasets` is empty)."
    settings = settings or {}
    planted_on = {r["dataset"] for r in runs}
    sources = "; ".join(
        f"{DATASET_LABELS.get(d, d)}: {', '.join(f)}"
        for d, f in (settings.get("fields") or {}).items()
        if d in planted_on
    )
    used = "K = {}, t = {}, at most {} epochs, {} seeds per model and variant".format(
        *(tables.distinct(runs, k) or "—" for k in ("embedding_size", "attention_size", "epochs")),
        len({r["seed"] for r in runs}),
    )
    design = (
        "The paper argues for the interaction-level weights Q by a mechanism: features that say "
        "the same thing (its example: Frappe's weekday = sunday and isweekend = weekend) get "
        "similar embeddings, so AFM's feature-level attention α, computed from the embedding "
        "products alone, gives their interactions similar and too large weights; a weight q "
        "per field pair, learned apart from the embeddings, can turn them down (eq. 5). The "
        "paper infers this from Tables 2-3, where the gaps are a few thousandths; here it is "
        "tested directly. To a dataset we add r fields that repeat a source field "
        f"({sources or 'see params.yaml'}): an *exact* copy, a *noisy* copy (each row's value "
        f"replaced with probability ε = {settings.get('epsilon', '—')} by a uniformly drawn "
        "value of the field) or a *coarse* copy (the value mapped onto "
        f"{settings.get('coarse_values', '—')} classes, as isweekend coarsens weekday), each "
        "a new field with its own feature ids. Every row, label and the train / validation / "
        "test split stay as they were, so only the redundancy changes with r and the RMSEs "
        "compare across r. FM, AFM, AoAFM, FFM, AFFM and AoAFFM train on every variant (AFM "
        "and AoAFM from the variant's pre-trained FM, AFFM and AoAFFM from its FFM, as in the "
        "protocol; Table 2's dropout and λ; the dataset's learning rate, no search). "
        f"Settings: {used}.\n\nIf the mechanism is real, (1) the test-RMSE gap AoA − plain "
        "falls (the advantage grows) as r grows, and (2) Q learns a lower q for the planted "
        "copies' pairs than for the same pairs of the original field. An exact copy is "
        "interchangeable with its source, so for it (2) can only hold by chance; noisy and "
        "coarse copies carry less than the original and make (2) a real test."
    )
    verdicts = [
        f"- **{r.claim.text}**: {r.status} (95% interval excludes 0: {r.beyond_spread}). "
        + "; ".join(r.to_dict()["evidence"])
        for r in results
        if r.claim.rq == "Mechanism"
    ]
    return "\n\n".join(
        [
            head,
            design,
            *(tables.markdown(t, level=3).rstrip() for t in built),
            "![Planted redundancy: RMSE and the AoA − plain gap against r](figures/redundancy.png)",
            "![Planted redundancy: α and q on the source's and the copies' pairs]"
            "(figures/redundancy_weights.png)",
            "### Result\n\n" + "\n".join(verdicts),
        ]
    )


def _gaps(records: list[dict], figure4_gaps: list[str], covered: Iterable[str]) -> list[str]:
    """Cells without runs among the datasets the profile covers."""
    covered = set(covered)
    gaps = []
    for table in ("table2", "table3", "table4"):
        missing = [
            f"{DATASET_LABELS[d]} {MODEL_LABELS[m]}"
            for t, d, m, _ in paper_cells()
            if t == table and d in covered and table_cell(records, t, d, m) is None
        ]
        if missing:
            gaps.append(f"{table.capitalize()}: no runs for {', '.join(missing)}")
    for dataset in [d for d in FIGURE_DATASETS if d in covered]:
        for group, label, _ in SWEEPS:
            if not any(r["group"] == group and r["dataset"] == dataset for r in records):
                gaps.append(
                    f"Figure 3: no sweep of {label[0].lower()}{label[1:]} on {DATASET_LABELS[dataset]}"
                )
    return gaps + figure4_gaps


def build_report(
    records: Iterable[dict],
    metas: Mapping[str, Mapping],
    out_dir: str | os.PathLike,
    *,
    profile: str,
    environment: Mapping | None = None,
    param_rows: Iterable[Mapping] = (),
    notes: Iterable[str] = (),
    root: str | os.PathLike = ".",
    datasets: Iterable[str] | None = None,
    redundancy_settings: Mapping | None = None,
) -> dict[str, Path]:
    """Write Tables 1-4, Figures 3-4, claims.json, params.md and REPORT.md under ``out_dir``.

    ``records`` are the run records (results/runs.json), ``metas`` each processed dataset's
    meta.json by name, ``notes`` the protocol choices where the paper is silent, ``root`` the
    folder the records' relative history paths start from, ``datasets`` those the profile
    covers (None: all; the others' cells are "not run"), ``redundancy_settings`` the
    profile's ``redundancy:`` section (for the text). Every file is written atomically;
    REPORT.md is written last. Returns the written paths by name.
    """
    records = validate_records(records)
    out_dir = Path(out_dir)
    banner, param_rows, notes = _banner(profile), list(param_rows), list(notes)
    built = [
        tables.table1(metas),
        *(f(records) for f in (tables.table2, tables.table3, tables.table4)),
    ]
    built_redundancy = [redundancy.rmse_table(records), redundancy.weights_table(records)]
    covered = list(DATASET_LABELS) if datasets is None else list(datasets)
    fig4, fig4_gaps = figure4_data(records, root, covered)
    start = start_table(records)
    paths: dict[str, Path] = {}
    with atomic_dir(out_dir / "tables") as tmp:
        for table in [*built, start, *built_redundancy]:
            for key, path in tables.write_table(table, tmp, profile=profile, banner=banner).items():
                paths[key] = out_dir / "tables" / path.name
        fig3 = figure3_data(records)
        for name, frame in (("figure3", fig3), ("figure4", fig4)):
            frame.assign(profile=profile).to_csv(
                tmp / f"{name}_data.csv", index=False, float_format="%.6g"
            )
            paths[f"{name}_data"] = out_dir / "tables" / f"{name}_data.csv"
    with atomic_dir(out_dir / "figures") as tmp:
        plot_figure3(records, tmp / "figure3.png", subtitle=_subtitle(profile))
        plot_figure4(fig4, tmp / "figure4.png", subtitle=_subtitle(profile))
        plot_start(start_curves(records, root), tmp / "pretrained_start.png")
        redundancy.plot_rmse(records, tmp / "redundancy.png", subtitle=_subtitle(profile))
        redundancy.plot_weights(
            records, tmp / "redundancy_weights.png", subtitle=_subtitle(profile)
        )
    for name in ("figure3", "figure4", "pretrained_start", "redundancy", "redundancy_weights"):
        paths[name] = out_dir / "figures" / f"{name}.png"

    results = evaluate_claims(records)
    paths["claims"] = out_dir / "claims.json"
    write_json(paths["claims"], {"profile": profile, "claims": [r.to_dict() for r in results]})
    params_md = _param_section(param_rows)
    paths["params"] = out_dir / "params.md"
    write_text(
        paths["params"],
        (banner + "\n\n" if banner else "") + params_md.replace("## ", "# ", 1) + "\n",
    )

    groups = Counter(r["group"] for r in records)
    sections = [
        f"# AoAFFM reproduction report — profile: {profile}",
        banner,
        "Reproduction of *Attention-over-Attention Field-aware Factorization Machine* "
        f"(AoAFFM, AAAI). Built from {len(records)} run records ("
        + (", ".join(f"{g}: {n}" for g, n in groups.items()) or "none")
        + "). Every table is also written as CSV under `tables/`.",
        *(tables.markdown(t, level=2).rstrip() for t in built),
        "## Figure 3\n\n![Figure 3: validation RMSE against embedding size, dropout and λ]"
        f"(figures/figure3.png)\n\nMean validation RMSE over seeds per swept value (error bars: "
        f"± one standard deviation where there are several seeds). {FIGURES_NOTE}",
        "## Figure 4\n\n![Figure 4: training and validation RMSE per epoch](figures/figure4.png)"
        "\n\nAoAFFM and AFM: the table2 run with the lowest seed; FFM: its table3 run. Solid: "
        "validation, dashed: training.",
        start_section(start, tables.markdown(start, level=2)),
        _redundancy_section(records, built_redundancy, results, redundancy_settings),
        _claims_section(results),
        _lr_search_section(records),
        params_md,
        "## Protocol choices where the paper is silent\n\n"
        + "\n".join(f"- {n}" for n in [*notes, _criteo_labels_note(metas)]),
        _environment_section(environment, records),
        _provenance_section(metas),
    ]
    covered_labels = [DATASET_LABELS[d] for d in covered]
    gaps = _gaps(records, fig4_gaps, covered)
    sections.append(
        "## Gaps\n\n" + ("\n".join(f"- {g}" for g in gaps) or "None: every cell has runs.")
    )
    not_covered = sorted({DATASET_LABELS[d] for _, d, _, _ in paper_cells()} - set(covered_labels))
    if not_covered:
        sections[-1] += (
            f"\n\nNot run by profile `{profile}` (not failures): every cell on "
            + ", ".join(not_covered)
            + "."
        )
    paths["report"] = out_dir / "REPORT.md"
    write_text(paths["report"], "\n\n".join(s for s in sections if s) + "\n")
    return paths


def metrics_summary(records: Iterable[dict]) -> dict:
    """Flat per-dataset metrics for ``dvc metrics show``: Tables 3/4 test RMSE and Table 2
    validation RMSE (means over seeds), numbers only."""
    records = validate_records(records)
    summary: dict[str, dict[str, float]] = {}
    for table, dataset, model, _ in paper_cells():
        cell = table_cell(records, table, dataset, model)
        if cell is None or not math.isfinite(cell.stat.mean):
            continue
        metric = "validation_rmse" if table == "table2" else "test_rmse"
        summary.setdefault(dataset, {})[f"{model}_{metric}"] = round(cell.stat.mean, 6)
    return summary


def read_metas(paths: Iterable[str | os.PathLike]) -> dict[str, dict]:
    """Each processed dataset's meta.json by its ``dataset`` name."""
    metas = {}
    for path in paths:
        meta = read_json(path, "a processed dataset's meta.json")
        if not isinstance(meta, dict) or "dataset" not in meta:
            raise UnreadableFile(f"{path}: expected a meta.json object with a 'dataset' key")
        metas[meta["dataset"]] = meta
    return metas

"""Stage: render Tables 1-4, Figures 3-4, the parameter counts and reports/REPORT.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from aoaffm.cli import require, run_stage  # noqa: E402
from aoaffm.config import load_config  # noqa: E402
from aoaffm.data import load_processed  # noqa: E402
from aoaffm.experiments import datasets_of, datasets_used, protocol_notes  # noqa: E402
from aoaffm.io import read_json  # noqa: E402
from aoaffm.report import build_report, read_records  # noqa: E402
from aoaffm.report.params import parameter_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = load_config(args.params)
    datasets = [d for g in ("table2", "table3", "table4") for d in datasets_of(cfg, g)]
    metas = {d: load_processed(Path("data/processed") / d).meta for d in dict.fromkeys(datasets)}
    evaluated = "the evaluate stage (`python stages/evaluate.py`)"
    paths = build_report(
        read_records(require("results/runs.json", evaluated)),
        metas,
        Path("reports"),
        profile=cfg["profile"],
        environment=read_json(require("results/environment.json", evaluated)),
        param_rows=parameter_rows(),
        notes=protocol_notes(cfg),
        datasets=datasets_used(cfg),
        redundancy_settings=cfg.get("redundancy"),
    )
    print("\n".join(f"wrote {p}" for p in paths.values()) if isinstance(paths, dict) else paths)


if __name__ == "__main__":
    run_stage(main, "report")

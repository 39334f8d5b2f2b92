"""Copy the finished reproduction of the current profile to reports/published/<profile>/.

    dvc exp run -S profile=frappe && python stages/publish.py

Not a DVC stage: a maintainer publishes a run on a named machine by committing that folder
(REPORT.md, tables, figures, claims, metrics, every run's history, metrics and settings, the
environment and the data provenance; no weights).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from aoaffm.cli import run_stage  # noqa: E402
from aoaffm.config import load_config  # noqa: E402
from aoaffm.experiments import GROUPS, datasets_of, datasets_used, plan  # noqa: E402
from aoaffm.io import read_json  # noqa: E402
from aoaffm.report.publish import publish  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=None, help="default: reports/published/<profile>")
    args = parser.parse_args()
    cfg = load_config(args.params)
    settings = {
        str(spec.run_dir()): {"group": group, "run_id": spec.run_id, **spec.settings()}
        for group in GROUPS
        for dataset in datasets_of(cfg, group)
        for spec in plan(cfg, group, dataset)
    }
    out = publish(
        read_json("results/runs.json"),
        settings,
        reports_dir="reports",
        environment=read_json("results/environment.json"),
        metas={d: read_json(f"data/processed/{d}/meta.json") for d in datasets_used(cfg)},
        out_dir=args.out or f"reports/published/{cfg['profile']}",
    )
    print(f"published {cfg['profile']} -> {out}")


if __name__ == "__main__":
    run_stage(main, "publish")

"""Stage: gather every finished run's metrics into the records the report reads.

Writes results/runs.json (one record per run and table/figure it serves),
results/environment.json (versions, device, git revision, profile) and reports/metrics.json
(the summary that `dvc metrics show` and `dvc exp show` display).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from aoaffm.cli import run_stage  # noqa: E402
from aoaffm.config import load_config  # noqa: E402
from aoaffm.environment import environment  # noqa: E402
from aoaffm.experiments import collect_records  # noqa: E402
from aoaffm.io import write_json  # noqa: E402
from aoaffm.report import metrics_summary  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = load_config(args.params)
    records = collect_records(cfg)
    write_json("results/runs.json", records)
    write_json("results/environment.json", environment(cfg))
    write_json("reports/metrics.json", metrics_summary(records))
    print(f"{len(records)} run records -> results/runs.json")


if __name__ == "__main__":
    run_stage(main, "evaluate")

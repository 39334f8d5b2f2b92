"""Wall time of one protocol group under several worker layouts (run-level parallelism).

    python benchmarks/parallel_runs.py                     # quick profile, table3 on Frappe
    python benchmarks/parallel_runs.py --layouts 1x1 2x1 1x2 --json

A layout ``WxT`` trains the group's runs on W worker processes of T threads each (``1xT``:
one after another in this process, ``train.workers: 1``). The pretrain group the attention
models start from is trained once beforehand (1 thread) and copied into every layout's fresh
run folder, so each layout times the same runs from scratch, one layout after another in one
process. Layouts with the same threads per run must give the same bits (the script checks);
the thread count itself changes how MKL rounds (deep and attention models), reported as the
RMSE difference per run. Needs ``data/processed/<dataset>`` (``stages/preprocess.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, without an editable install
    sys.path.insert(0, str(REPO))

from aoaffm.config import load_config  # noqa: E402
from aoaffm.experiments import run_group  # noqa: E402

METRICS = ("validation_rmse", "test_rmse", "train_rmse")


def _layout(text: str) -> tuple[int, int]:
    workers, _, threads = text.partition("x")
    return int(workers), int(threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--group", default="table3")
    parser.add_argument("--dataset", default="frappe")
    parser.add_argument("--data-root", default=str(REPO / "data" / "processed"))
    parser.add_argument("--layouts", nargs="+", default=["1x1", "2x1", "1x2"], type=str)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)

    cfg = load_config(args.params, profile=args.profile)
    work = Path(tempfile.mkdtemp(prefix="parallel_runs."))
    try:
        torch.set_num_threads(1)
        run_group(cfg, "pretrain", args.dataset, data_root=args.data_root,
                  runs_root=work / "pretrained", progress=False)  # fmt: skip
        rows, results = [], {}
        for layout in args.layouts:
            workers, threads = _layout(layout)
            root = work / layout
            shutil.copytree(work / "pretrained" / "pretrain", root / "pretrain")
            cfg["train"]["workers"] = workers
            torch.set_num_threads(workers * threads)  # the workers share this process's
            started = time.perf_counter()
            done = run_group(cfg, args.group, args.dataset, data_root=args.data_root,
                             runs_root=root, progress=False)  # fmt: skip
            wall = time.perf_counter() - started
            results[layout] = {spec.run_id: [m[k] for k in METRICS] for spec, m in done}
            rows.append({"layout": layout, "workers": workers, "threads_per_run": threads,
                         "runs": len(done), "wall_s": round(wall, 1),
                         "sum_run_s": round(sum(m["wall_time_s"] for _, m in done), 1)})  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]["wall_s"]
    for row in rows:
        row["speedup_vs_first"] = round(base / row["wall_s"], 2)
        same_threads = [r["layout"] for r in rows if r["threads_per_run"] == row["threads_per_run"]]
        row["bit_identical_to"] = [
            other for other in same_threads if results[other] == results[row["layout"]]
        ]
        diffs = {  # the largest of validation, test and train RMSE's difference, per run
            run_id.split("-", 1)[0]: max(
                abs(a - b) for a, b in zip(values, results[rows[0]["layout"]][run_id], strict=True)
            )
            for run_id, values in results[row["layout"]].items()
        }
        row["abs_rmse_diff_vs_first"] = diffs
        row["max_abs_rmse_diff_vs_first"] = max(diffs.values())
    facts = {"cpus": os.cpu_count(), "profile": args.profile, "group": args.group,
             "dataset": args.dataset, "torch": torch.__version__}  # fmt: skip
    if args.json:
        print(json.dumps({"machine": facts, "rows": rows}, indent=2))
        return
    print(f"{args.group}/{args.dataset} ({args.profile} profile), {facts['cpus']} CPUs")
    for row in rows:
        print(
            f"{row['layout']:>5}: {row['wall_s']:7.1f} s wall ({row['runs']} runs, "
            f"{row['sum_run_s']:.1f} s summed), x{row['speedup_vs_first']} vs {rows[0]['layout']}, "
            f"max |ΔRMSE| {row['max_abs_rmse_diff_vs_first']:.1e}"
        )


if __name__ == "__main__":
    main()

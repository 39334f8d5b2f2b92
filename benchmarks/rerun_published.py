"""A published Frappe run trained again with one setting changed: its dense matrix products
in bf16, or a longer early-stopping patience.

    python benchmarks/rerun_published.py --bf16-products [--model aoaffm] [--seed 2019]
    python benchmarks/rerun_published.py --patience 10 [--model aoaffm] [--seed 2019]

Trains, at the ``frappe`` profile's settings, the pre-trained FFM (or FM) the run starts
from (as published, float32, the profile's patience) and then the Table 2 run of ``--model``
(an attention model; a compared algorithm: its Table 3 run) with the change, to the run's
own early stop, on one thread, and prints its validation and test RMSE and epoch times beside
the published run's (``reports/published/frappe``); ``--runs DIR`` keeps the run folders.

- ``--bf16-products``: ``train.bf16_products`` (the attention's W P forward, ∂W and ∂P
  backward, or the deep models' linear layers, from bf16 factors; oneDNN accumulates in
  float32 and the result is rounded to bf16; everything else float32), read against the seed
  spread of the published Table 2 runs (issue 14 item 6). CPU only; benchmarks/throughput.py
  ``--bf16 afm,aoaffm --bf16-mode products`` gives the per-step speed.
- ``--patience N``: the run goes on until N epochs brought no new best (issue 14 item 3).
  On the CPU that published the runs it repeats the published run bit for bit up to the
  published stop; on another (an AMD EPYC against the publisher's Intel Xeon) FM and FFM
  still do, while the attention models drift by rounding (tests/test_fidelity.py), so the
  rules are compared on the one longer history: ``benchmarks/early_stopping.py --runs DIR``
  replays it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, env_threads

from aoaffm.config import load_config
from aoaffm.data import load_processed
from aoaffm.experiments import build_model, plan, train_config
from aoaffm.io import read_json
from aoaffm.models import ATTENTION_MODELS
from aoaffm.train import train_model

PUBLISHED = REPO / "reports" / "published" / "frappe"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--model",
        default="aoaffm",
        choices=("afm", "aoafm", "affm", "aoaffm", "wide_deep", "deepcross", "hofm"),
        help="an attention model (its Table 2 run) or a compared algorithm (its Table 3 run)",
    )
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument("--data", type=Path, required=True, help="processed nfm-rebuilt Frappe")
    parser.add_argument("--bf16-products", action="store_true", help="train.bf16_products")
    parser.add_argument("--patience", type=int, default=None, help="train.patience instead")
    parser.add_argument("--runs", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    change = {"bf16_products": True} if args.bf16_products else {}
    if args.patience is not None:
        change["patience"] = args.patience
    if not change:
        parser.error("nothing to change: give --bf16-products and/or --patience N")
    env_threads(1)
    cfg = load_config(REPO / "params.yaml", profile="frappe")
    data = load_processed(args.data)
    group = "table2" if args.model in ATTENTION_MODELS else "table3"
    run = next(
        s for s in plan(cfg, group, "frappe", searched=False)
        if s.model == args.model and s.seed == args.seed
    )  # fmt: skip
    start = next(s for s in plan(cfg, "pretrain", "frappe") if s.run_id == run.pretrained)
    with tempfile.TemporaryDirectory(prefix="rerun-published-") as scratch:
        root = str(args.runs or scratch)
        print(f"pre-training {start.run_id} (as published)", file=sys.stderr, flush=True)
        train_model(build_model(start, data, root), data, train_config(start, cfg),
                    start.run_dir(root), progress=False)  # fmt: skip
        trained = dataclasses.replace(run, **change)
        print(f"training {trained.run_id} with {change}", file=sys.stderr, flush=True)
        began = time.perf_counter()
        model, settings = build_model(trained, data, root), train_config(trained, cfg)
        metrics = train_model(model, data, settings, trained.run_dir(root), progress=True)
        wall = time.perf_counter() - began
        history = read_json(trained.run_dir(root) / "history.json")
    published = PUBLISHED / "runs" / group / "frappe" / run.run_id
    theirs = read_json(published / "metrics.json")
    their_history = read_json(published / "history.json")
    result = {
        "run": run.run_id,
        "cpu_threads": 1,
        "change": change,
        "rerun_id": trained.run_id,
        "rerun": {k: metrics[k] for k in ("validation_rmse", "test_rmse", "best_epoch", "epochs")},
        "published": {
            k: theirs[k] for k in ("validation_rmse", "test_rmse", "best_epoch", "epochs")
        },
        "rerun_epoch_s": [h["time_s"] + h["eval_time_s"] for h in history],
        "published_epoch_s": [h["time_s"] + h["eval_time_s"] for h in their_history],
        "rerun_validation": [h["validation_rmse"] for h in history],
        "published_validation": [h["validation_rmse"] for h in their_history],
        "wall_s": wall,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage: train every run of one protocol group on one dataset.

    python stages/train.py table3 frappe      # groups: tune table2 table3 table4 sweeps
                                              # random_start redundancy_pretrain redundancy

Runs already finished are kept, an interrupted run resumes from its last epoch, and runs
whose settings are no longer in params.yaml are removed. With `train.gpus` > 1 the stage
re-launches itself under torchrun's launcher (one process per GPU, DistributedDataParallel;
CPU processes only when `train.device: cpu` asks for them).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from aoaffm.cli import run_stage  # noqa: E402
from aoaffm.config import load_config  # noqa: E402
from aoaffm.experiments import GROUPS, run_group, write_attention  # noqa: E402
from aoaffm.train.distributed import check_world, launch  # noqa: E402


def main(argv: list[str] | None = None, default_group: str | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    if default_group is None:
        parser.add_argument("group", choices=[g for g in GROUPS if g != "pretrain"])
    parser.add_argument("dataset")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    group = default_group or args.group
    cfg = load_config(args.params)

    gpus = cfg["train"]["gpus"]
    if gpus > 1 and "WORLD_SIZE" not in os.environ:
        notice = check_world(gpus, cfg["train"]["device"], args.params)
        if notice:
            print(f"{Path(sys.argv[0]).stem}: {notice}")
        launch(sys.argv[0], sys.argv[1:], gpus)
        return
    is_main = int(os.environ.get("RANK", "0")) == 0
    results = run_group(
        cfg, group, args.dataset, progress=is_main and not args.no_progress, is_main=is_main
    )
    if is_main:
        for spec, metrics in results:
            print(
                f"{group}/{args.dataset} {spec.run_id}: validation RMSE "
                f"{metrics['validation_rmse']:.4f}, test RMSE {metrics['test_rmse']:.4f}"
            )
        if group == "redundancy":  # the mechanism: each attention run's α and q per pair
            for path in write_attention(cfg, args.dataset):
                print(f"wrote {path}")


if __name__ == "__main__":
    run_stage(main, "train")

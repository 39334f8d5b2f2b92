"""Stage: build data/processed/<dataset>/ from data/raw/<dataset>/.

    python stages/preprocess.py frappe        # frappe | movielens | criteo

Negative sampling (Frappe, MovieLens), the 70/20/10 split and the processed format of DESIGN
§2; the variant, seed, negatives per positive and split come from params.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from aoaffm.cli import run_stage  # noqa: E402
from aoaffm.config import load_config  # noqa: E402
from aoaffm.data import DATASETS, build_dataset, source_paths  # noqa: E402
from aoaffm.experiments import datasets_used  # noqa: E402
from aoaffm.io import mark_unused  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", default=None, help="default: data/raw/<dataset>")
    parser.add_argument("--out", default=None, help="default: data/processed/<dataset>")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(args.params)
    data = cfg["data"]
    variant = data[args.dataset]["source"]
    if args.dataset not in datasets_used(cfg):
        out = args.out or f"data/processed/{args.dataset}"
        mark_unused(out, f"profile {cfg['profile']} trains nothing on {args.dataset}")
        print(f"{args.dataset}: not used by profile {cfg['profile']}; nothing to build")
        return
    meta = build_dataset(
        args.dataset,
        variant,
        source_paths(args.dataset, variant, args.raw or f"data/raw/{args.dataset}"),
        args.out or f"data/processed/{args.dataset}",
        seed=cfg["seed"],
        negatives_per_positive=data["negatives_per_positive"],
        split=data["split"],
        progress=not args.no_progress,
    )
    print(
        f"{args.dataset}/{variant}: {meta['instances']:,} instances, {meta['features']:,} "
        f"features, {meta['fields']} fields, splits {meta['split_sizes']}"
    )


if __name__ == "__main__":
    run_stage(main, "preprocess")

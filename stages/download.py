"""Stage: fetch one dataset's source files into data/raw/<dataset>/, checksummed.

    python stages/download.py frappe          # frappe | movielens | criteo

The variant is params.yaml's data.<dataset>.source. A mirror folder stands in for the
network: $AOAFFM_MIRROR, else data.mirror (the variable wins). Without either, files come from
their canonical URLs (streamed, resumable, retried, verified).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from aoaffm.cli import run_stage  # noqa: E402
from aoaffm.config import load_config  # noqa: E402
from aoaffm.data import DATASETS, fetch_sources  # noqa: E402
from aoaffm.experiments import datasets_used  # noqa: E402
from aoaffm.io import mark_unused  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=None, help="default: data/raw/<dataset>")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(args.params)
    variant = cfg["data"][args.dataset]["source"]
    out = Path(args.out or f"data/raw/{args.dataset}")
    if args.dataset not in datasets_used(cfg):
        mark_unused(out, f"profile {cfg['profile']} trains nothing on {args.dataset}")
        print(f"{args.dataset}: not used by profile {cfg['profile']}; nothing to download")
        return
    paths = fetch_sources(
        args.dataset, variant, out, mirror=cfg["data"]["mirror"], progress=not args.no_progress
    )
    for role, path in paths.items():
        print(f"{args.dataset}/{variant} {role}: {path}")


if __name__ == "__main__":
    run_stage(main, "download")

"""Stage: plant redundancy: data/planted/<dataset>/<variant>/ from data/processed/<dataset>/.

    python stages/plant.py frappe

Each variant of params.yaml's `redundancy:` (a kind and r > 0) is the processed dataset with
r added fields that repeat a source field (aoaffm.data.redundancy): same rows, labels and
split, only columns added, the noise drawn with the profile's seed. r = 0 is the processed
folder itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from aoaffm.cli import run_stage  # noqa: E402
from aoaffm.config import load_config  # noqa: E402
from aoaffm.data import DATASETS, load_processed  # noqa: E402
from aoaffm.data.redundancy import plant_variants  # noqa: E402
from aoaffm.experiments import datasets_of, plants, redundancy_variants  # noqa: E402
from aoaffm.io import mark_unused  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    cfg = load_config(args.params)
    out = Path("data/planted") / args.dataset
    if args.dataset not in datasets_of(cfg, "redundancy"):
        mark_unused(out, f"profile {cfg['profile']} plants no redundancy in {args.dataset}")
        print(f"{args.dataset}: no planted redundancy in profile {cfg['profile']}")
        return
    variants = {
        name: plants(planted)
        for name, planted in redundancy_variants(cfg, args.dataset).items()
        if planted
    }
    source = load_processed(Path("data/processed") / args.dataset)
    metas = plant_variants(source, variants, out, seed=cfg["seed"])
    for name, meta in metas.items():
        print(f"{args.dataset}/{name}: {meta['fields']} fields, {meta['features']:,} features")


if __name__ == "__main__":
    run_stage(main, "plant")

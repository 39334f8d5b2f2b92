"""Evaluation's forward pass on one CPU thread: whole eval batches against cache-sized chunks.

    python benchmarks/eval_chunks.py [--rows 8192] [--repeats 5] [--json]

For each model at K = t = 256 on Frappe's shape (10 fields x 538 values), times
``model(ids)`` on one eval batch of ``--rows`` random rows and ``loop.forward_in_chunks`` on
the same rows, alternating, best of ``--repeats``; checks the two give the same bits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aoaffm.models import create  # noqa: E402
from aoaffm.train.loop import CPU_FORWARD_ROWS, forward_in_chunks  # noqa: E402

MODELS = ("afm", "aoafm", "aoaffm", "hofm", "wide_deep", "deepcross", "fm", "ffm")
FIELDS, VALUES = 10, 538


def measure(name: str, rows: int, repeats: int) -> dict:
    torch.manual_seed(0)
    hparams = {"attention_size": 256} if name in ("afm", "aoafm", "affm", "aoaffm") else {}
    model = create(name, FIELDS * VALUES, FIELDS, 256, **hparams).eval()
    ids = torch.randint(0, VALUES, (rows, FIELDS)) + torch.arange(FIELDS) * VALUES
    cpu = torch.device("cpu")
    whole, chunked = [], []
    with torch.inference_mode():
        same = torch.equal(model(ids), forward_in_chunks(model, ids, None, cpu))
        for _ in range(repeats):
            start = time.perf_counter()
            model(ids)
            middle = time.perf_counter()
            forward_in_chunks(model, ids, None, cpu)
            whole.append(middle - start)
            chunked.append(time.perf_counter() - middle)
    return {
        "model": name,
        "whole_rows_per_s": rows / min(whole),
        "chunked_rows_per_s": rows / min(chunked),
        "speedup": min(whole) / min(chunked),
        "same_bits": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the chunks are used on one thread only
    results = [measure(m, args.rows, args.repeats) for m in args.models.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"chunks of {CPU_FORWARD_ROWS} rows against one batch of {args.rows}, one thread")
    for r in results:
        print(
            f"{r['model']:>10}: whole {r['whole_rows_per_s']:>9,.0f} rows/s, chunks "
            f"{r['chunked_rows_per_s']:>9,.0f} rows/s, {r['speedup']:.2f}x, "
            f"same bits: {r['same_bits']}"
        )


if __name__ == "__main__":
    main()

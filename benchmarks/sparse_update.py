"""Adagrad step time on embedding tables of growing size, sparse against dense gradients.

A batch touches the same number of rows (default 1,000) in every table. With
``nn.Embedding(sparse=True)`` (what every model in ``aoaffm.models`` uses) the gradient and
the optimizer step cover only those rows, so the step time should stay flat as the table
grows from 10k to 1M rows; with dense gradients it grows with the table.

    python benchmarks/sparse_update.py                      # CPU, one thread
    python benchmarks/sparse_update.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from aoaffm.io import write_json  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_updates(
    rows: int, dim: int, touched: int, batch: int, sparse: bool, repeats: int, device
) -> dict:
    """Median seconds of (backward + Adagrad step) and of the step alone, over ``repeats``."""
    gen = torch.Generator().manual_seed(0)
    table = nn.Embedding(rows, dim, sparse=sparse).to(device)
    optimizer = torch.optim.Adagrad(table.parameters(), lr=0.05, initial_accumulator_value=1e-8)
    active = torch.randperm(rows, generator=gen)[:touched]
    # a batch of `batch` lookups that together touch exactly `touched` distinct rows
    ids = active[torch.arange(batch) % touched].to(device)
    update, step = [], []
    for i in range(repeats + 3):  # the first 3 warm up (allocations, optimizer state)
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        start = time.perf_counter()
        table(ids).square().sum().backward()
        _sync(device)
        mid = time.perf_counter()
        optimizer.step()
        _sync(device)
        end = time.perf_counter()
        if i >= 3:
            update.append(end - start)
            step.append(end - mid)
    return {
        "rows": rows,
        "gradient": "sparse" if sparse else "dense",
        "backward_and_step_ms": 1e3 * statistics.median(update),
        "step_ms": 1e3 * statistics.median(step),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=64, help="embedding size K")
    parser.add_argument("--touched", type=int, default=1_000, help="distinct rows per batch")
    parser.add_argument("--batch", type=int, default=4_096, help="lookups per batch")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)"
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # Adagrad builds sparse tensors from indices it trusts; opting out explicitly silences
    # torch's warning that the (costly) invariant checks are off.
    torch.sparse.check_sparse_tensor_invariants.disable()
    device = torch.device(args.device)

    cases = [(rows, sparse) for rows in args.rows for sparse in (True, False)]
    results = [
        time_updates(rows, args.dim, args.touched, args.batch, sparse, args.repeats, device)
        for rows, sparse in tqdm(cases, desc="tables")
    ]
    print(
        f"device={device} threads={args.threads} K={args.dim} batch={args.batch} touched rows={args.touched}"
    )
    print("| rows | gradient | backward + step (ms) | Adagrad step (ms) |")
    print("| ---: | --- | ---: | ---: |")
    for r in results:
        print(
            f"| {r['rows']:,} | {r['gradient']} | {r['backward_and_step_ms']:.2f} | {r['step_ms']:.2f} |"
        )
    if args.json:
        write_json(args.json, {"device": str(device), "settings": vars(args), "results": results})


if __name__ == "__main__":
    main()

"""A prepared check of the GPU path, for a session that is lent one GPU (about 3-5 minutes).

    python benchmarks/gpu_check.py                       # on CUDA: all three parts
    python benchmarks/gpu_check.py --device cpu --smoke  # seconds, tiny shapes (the test suite)

1. Agreement: every model (all nine, batch norm on, dropout off) is built once on the CPU,
   copied with identical weights to the device, and given the same batch; the relative error
   ‖device - cpu‖ / ‖cpu‖ of the predictions and of every parameter's gradient (sparse ones
   densified) must stay below ``--tolerance``.
2. Throughput: each model the paper protocol trains, on synthetic data of the paper's
   shapes (ids drawn uniformly per field; every split resident on the device, batches picked
   by index there, so nothing crosses the host-device link in the loop): Frappe (10 fields,
   5,382 features, K = 256, batch 128), MovieLens (3 fields, 90,445 features, K = 256,
   batch 4096), Criteo (39 fields, 662,913 features; FFM and AoAFFM K = 4, batch 128, FM and
   AFM K = 40, batch 4096). Training steps are the trainer's (``harness.OurStep``); evaluation
   is forward passes in inference mode at the evaluation batch size (capped at
   ``--eval-batch-cap`` rows so that Criteo's AoAFFM hidden layer, B x 741 pairs x t, fits).
   With ``--bf16`` each cell is also timed under bf16 autocast.
3. Projection: the full paper protocol from ``params.yaml`` (``aoaffm.experiments.plan`` over
   every group and dataset, 252 runs) priced with the measured rates: per run, epochs x
   (training rows / training rate + (training + validation rows) / evaluation rate), the
   trainer's per-epoch work. Every run of a (dataset, model) is priced at that model's
   largest K in the plan, an upper bound for the embedding-size sweep. It is printed at the
   epoch cap (params: train.epochs) and at ``--assumed-epochs`` (early stopping ends most runs
   far sooner; the AFM code's Frappe runs stop within 20-40 epochs).

Output: readable lines on stdout, and with ``--out FILE`` every number as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from harness import REPO, OurStep, Rows, alternate, median, synchronize

from aoaffm.config import load_config
from aoaffm.experiments import GROUPS, build_model, plan, train_config
from aoaffm.models import MODEL_NAMES, create
from aoaffm.report.paper import TABLE1
from aoaffm.train.allocator import keep_freed_memory

# The paper's data shapes. Frappe's field sizes are those of NFM's preparation
# (shared/datasets/README.md); MovieLens is 17,045 users, 23,743 movies, 49,657 tags (Table 1);
# Criteo's 662,913 features (Table 1) are spread over 13 integer fields of 64 buckets and 26
# categorical fields of geometrically growing size, since only the total shapes the cost.
FIELD_SIZES = {
    "frappe": [957, 4082, 7, 7, 2, 3, 2, 9, 80, 233],
    "movielens": [17_045, 23_743, 49_657],
}
CRITEO_FEATURES = 662_913
CRITEO_TRAIN_FILE_ROWS = 45_840_617  # LIBSVM criteo.kaggle2014 train file, split train/val


def criteo_field_sizes() -> list[int]:
    categorical = np.geomspace(4, 1, 26) ** -6  # from 1/4096 of the mass up to the largest
    share = categorical / categorical.sum() * (CRITEO_FEATURES - 13 * 64)
    sizes = np.maximum(np.floor(share).astype(int), 2)
    sizes[-1] += CRITEO_FEATURES - 13 * 64 - sizes.sum()
    return [64] * 13 + sizes.tolist()


def field_sizes(dataset: str) -> list[int]:
    return criteo_field_sizes() if dataset == "criteo" else FIELD_SIZES[dataset]


def split_rows(dataset: str, fractions) -> dict[str, int]:
    """Training and validation rows of the paper's data (Table 1 and the split fractions;
    Criteo's train file is split into training and validation, its test file is apart)."""
    f_train, f_validation = fractions[0], fractions[1]
    if dataset == "criteo":
        train = int(CRITEO_TRAIN_FILE_ROWS * f_train / (f_train + f_validation))
        return {"train": train, "validation": CRITEO_TRAIN_FILE_ROWS - train}
    instances = next(s.data_instances for s in TABLE1 if s.dataset == dataset)
    return {"train": int(instances * f_train), "validation": int(instances * f_validation)}


def synthetic_rows(sizes: list[int], n_rows: int, device, seed: int = 0) -> Rows:
    gen = torch.Generator().manual_seed(seed)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ids = torch.stack(
        [
            torch.randint(size, (n_rows,), generator=gen) + int(o)
            for size, o in zip(sizes, offsets, strict=True)
        ],
        dim=1,
    ).int()
    labels = torch.randint(0, 2, (n_rows,), generator=gen).float() * 2 - 1
    return Rows(ids.to(device), labels.to(device))


def shrink(sizes: list[int], limit: int) -> list[int]:
    return [max(2, min(size, limit)) for size in sizes]


# --------------------------------------------------------------------------- 1. agreement


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    reference = reference.to_dense() if reference.is_sparse else reference
    other = (other.to_dense() if other.is_sparse else other).to(reference.device)
    scale = reference.double().norm().item()
    return (other.double() - reference.double()).norm().item() / (scale or 1.0)


def agreement(device, args) -> dict[str, dict]:
    """Relative errors of the device against the CPU on identical weights and inputs."""
    sizes = [37, 50, 7, 7, 2, 3, 2, 9, 20, 33]
    n_features, n_fields = sum(sizes), len(sizes)
    batch = synthetic_rows(sizes, 64, "cpu", seed=1)
    results = {}
    for name in args.models:
        torch.manual_seed(0)
        hidden = {"hidden_sizes": [32, 16]} if name in ("wide_deep", "deepcross") else {}
        cpu = create(name, n_features, n_fields, 16, attention_size=16, batch_norm=True, **hidden)
        other = create(name, n_features, n_fields, 16, attention_size=16, batch_norm=True, **hidden)
        other.load_state_dict(cpu.state_dict())
        other.to(device)
        outputs = []
        for model, dev in ((cpu, "cpu"), (other, device)):
            model.train()
            prediction = model(batch.ids.to(dev).long())
            (0.5 * (prediction - batch.labels.to(dev)).square().sum()).backward()
            outputs.append((prediction.detach(), {n: p.grad for n, p in model.named_parameters()}))
        (p_cpu, g_cpu), (p_dev, g_dev) = outputs
        errors = {"prediction": relative_error(p_cpu, p_dev)}
        errors.update({f"grad {n}": relative_error(g_cpu[n], g_dev[n]) for n in g_cpu})
        worst = max(errors, key=errors.get)
        results[name] = {
            "max_relative_error": errors[worst],
            "worst": worst,
            "ok": errors[worst] <= args.tolerance,
        }
    return results


# --------------------------------------------------------------------------- 2. throughput


def representative_runs(cfg: dict) -> dict[tuple[str, str], object]:
    """One run per (dataset, model) of the protocol: the one with the largest K."""
    chosen = {}
    for group in GROUPS:
        for dataset in ("frappe", "movielens", "criteo"):
            for spec in plan(cfg, group, dataset, searched=False):
                key = (dataset, spec.model)
                if key not in chosen or spec.embedding_size > chosen[key].embedding_size:
                    chosen[key] = spec
    return chosen


def measure_cell(spec, cfg, device, args, *, bf16: bool) -> dict:
    sizes = field_sizes(spec.dataset)
    batch_size, eval_batch = (
        spec.batch_size,
        min(train_config(spec, cfg).eval_batch_size, args.eval_batch_cap),
    )
    if args.smoke:  # tiny shapes: this only proves the code runs
        sizes = shrink(sizes, 50)
        spec = dataclasses.replace(
            spec,
            embedding_size=min(spec.embedding_size, 8),
            attention_size=8,
            batch_size=min(batch_size, 32),
            hidden_sizes=spec.hidden_sizes and (8, 4),
        )
        batch_size, eval_batch = spec.batch_size, 64
    shape = SimpleNamespace(n_features=sum(sizes), n_fields=len(sizes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seed_everything's deterministic-algorithm notes
        model = build_model(dataclasses.replace(spec, pretrained=None), shape).to(device)
    rows = synthetic_rows(sizes, max(args.rows, 2 * batch_size, eval_batch), device)
    step = OurStep(model, rows, batch_size, spec.learning_rate, seed=spec.seed, bf16=bf16)
    train_s = alternate(
        {"train": step}, steps=args.steps, windows=args.windows, warmup=args.warmup, device=device
    )["train"]
    model.eval()
    ids = rows.ids[:eval_batch].long()

    @torch.inference_mode()
    def evaluate():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            model(ids)

    eval_s = alternate(
        {"eval": evaluate},
        steps=max(1, args.steps // 4),
        windows=args.windows,
        warmup=1,
        device=device,
    )["eval"]
    return {
        "dataset": spec.dataset,
        "model": spec.model,
        "k": spec.embedding_size,
        "batch_size": batch_size,
        "bf16": bf16,
        "train_samples_per_s": batch_size / median(train_s),
        "eval_samples_per_s": eval_batch / median(eval_s),
        "eval_batch": eval_batch,
    }


# --------------------------------------------------------------------------- 3. projection


def projection(cfg: dict, rates: dict[tuple[str, str], dict], assumed_epochs: int) -> dict:
    """Hours of the whole protocol at the epoch cap and at ``assumed_epochs`` per run."""
    hours = {"cap": 0.0, "assumed": 0.0}
    by_group: dict[str, float] = {}
    runs = 0
    for group in GROUPS:
        for dataset in ("frappe", "movielens", "criteo"):
            rows = split_rows(dataset, cfg["data"]["split"])
            for spec in plan(cfg, group, dataset, searched=False):
                rate = rates[(dataset, spec.model)]
                epoch_s = (
                    rows["train"] / rate["train_samples_per_s"]
                    + (rows["train"] + rows["validation"]) / rate["eval_samples_per_s"]
                )
                hours["cap"] += spec.epochs * epoch_s / 3600
                hours["assumed"] += min(spec.epochs, assumed_epochs) * epoch_s / 3600
                by_group[group] = by_group.get(group, 0.0) + spec.epochs * epoch_s / 3600
                runs += 1
    return {
        "runs": runs,
        "hours_at_cap": hours["cap"],
        "hours_at_assumed_epochs": hours["assumed"],
        "assumed_epochs": assumed_epochs,
        "hours_at_cap_by_group": by_group,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny shapes, few steps: proves the script runs (seconds on a CPU)",
    )
    parser.add_argument(
        "--models",
        default=",".join(MODEL_NAMES),
        help="models of the agreement check (default: all nine)",
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=REPO / "params.yaml",
        help="the protocol to project (default: the repository's params.yaml)",
    )
    parser.add_argument("--steps", type=int, default=30, help="training steps per timed window")
    parser.add_argument("--windows", type=int, default=3, help="timed windows per cell")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per cell")
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic rows per cell")
    parser.add_argument(
        "--eval-batch-cap",
        type=int,
        default=8192,
        help="largest evaluation batch timed (memory of Criteo's AoAFFM)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest relative error of the agreement check",
    )
    parser.add_argument(
        "--assumed-epochs", type=int, default=30, help="epochs per run for the second projection"
    )
    parser.add_argument("--bf16", action="store_true", help="also time each cell under bf16")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch)")
    parser.add_argument("--out", type=Path, default=None, help="write every number as JSON")
    args = parser.parse_args(argv)
    args.models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    if args.smoke:
        args.steps, args.windows, args.warmup, args.rows = 2, 1, 1, 256
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.sparse.check_sparse_tensor_invariants.disable()  # as the trainer: said, not implied
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory()  # as the trainer on the CPU
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --device cpu --smoke)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    started = time.perf_counter()
    print(f"device: {name}; torch {torch.__version__}")
    report = {"device": str(device), "device_name": name, "torch": torch.__version__}

    report["agreement"] = agreement(device, args)
    print(f"\n1. agreement with the CPU (relative error, tolerance {args.tolerance:g})")
    for model, r in report["agreement"].items():
        print(
            f"  {model:10s} {r['max_relative_error']:.2e} ({r['worst']}) "
            f"{'ok' if r['ok'] else 'FAIL'}"
        )

    cfg = load_config(args.params, profile="paper")  # the paper protocol, whatever ran last
    print("\n2. throughput (samples/s; synthetic data of the paper's shapes)")
    cells, rates = [], {}
    for (dataset, model), spec in representative_runs(cfg).items():
        for bf16 in (False, True) if args.bf16 else (False,):
            cell = measure_cell(spec, cfg, device, args, bf16=bf16)
            cells.append(cell)
            if not bf16:
                rates[(dataset, model)] = cell
            print(
                f"  {dataset:9s} {model:10s} K={cell['k']:<3d} batch {cell['batch_size']:<5d}"
                f"{' bf16' if bf16 else ''} train {cell['train_samples_per_s']:>12,.0f}"
                f"  eval {cell['eval_samples_per_s']:>13,.0f}"
            )
    report["throughput"] = cells

    report["projection"] = projection(cfg, rates, args.assumed_epochs)
    p = report["projection"]
    print(
        f"\n3. the paper protocol ({p['runs']} runs) on this device: "
        f"{p['hours_at_cap']:.1f} h at the epoch cap, "
        f"{p['hours_at_assumed_epochs']:.1f} h at {p['assumed_epochs']} epochs per run"
    )
    for group, hours in p["hours_at_cap_by_group"].items():
        print(f"  {group:9s} {hours:8.1f} h at the cap")
    report["wall_s"] = time.perf_counter() - started
    print(f"\ndone in {report['wall_s']:.0f} s")
    if args.out is not None:
        from aoaffm.io import write_json

        write_json(args.out, report)
    synchronize(device)
    return 0 if all(r["ok"] for r in report["agreement"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

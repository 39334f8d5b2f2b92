"""Where the time of the ``frappe`` profile goes: a few epochs of the real trainer per model,
split into phases, and the wall time of Table 3's Frappe column and of the whole profile
projected from them.

    python benchmarks/protocol_time.py                  # Markdown tables
    python benchmarks/protocol_time.py --json           # the same numbers as JSON on stdout
    python benchmarks/protocol_time.py --gpu-check gpu_check.json   # + a measured GPU's rates
    python benchmarks/protocol_time.py --count-only     # the assumed GPU only, in a minute

1. Epoch split. For each model run of the profile (the pre-trainings of FM and FFM without
   dropout, Table 3's baselines, Table 2's attention models, each at its first seed) the
   trainer (``aoaffm.train.train_model``, settings from ``aoaffm.experiments.train_config``:
   K = 256, t = 256, batch 128, the profile's dropout and λ) trains ``--epochs`` epochs on the
   profile's data (Frappe ``nfm-rebuilt``, built from the data mirror) into a temporary run
   folder, writing its checkpoints, history and dvclive log as in the pipeline. From random
   weights, not the pre-trained start: an epoch costs the same. Each epoch is split into the
   training pass, the evaluation of Figure 4's training-RMSE rows and of the validation split
   (the history's per-epoch phase times), the checkpoint and history writing, and the rest
   (dvclive's log, the best weights' copy, early stopping; the epoch's wall time, start of
   ``_Trainer._epoch`` to the end-of-epoch callback, less the phases). A run also has a
   setup (data to the device, optimizer, dvclive) and an end (test RMSE, best weights,
   model.pt, metrics.json), timed once.
2. Projection. Every run the profile plans (``aoaffm.experiments.plan`` over every group,
   runs with the same identity counted once, as the pipeline trains them once) is priced at
   setup + end + epochs x (measured epoch wall time) of its model (FM and FFM without dropout
   at their pre-training's rate). Epochs per run: those of the published runs
   (``reports/published/frappe/runs``: the same group and model, mean over seeds, so also
   Table 2's later seeds and the pre-trainings at other K); a run without one takes the mean
   of its model's published runs of other groups but pre-training (sweeps, random_start),
   else ``--assumed-epochs``. Runs at K < 256 (Figure
   3's embedding-size sweep) are priced at K = 256: an upper bound.
   With ``--gpu-check`` (the JSON of ``gpu_check.py --out``, run on a GPU) the same runs are
   priced on that device from its training and evaluation rates (no setup, checkpoint or
   rest: those the GPU run has not measured).
3. A GPU, assumed (no device measured). A GPU runs the reference models (``aoaffm.fast``
   is CPU only), one kernel per aten operator, launched by the host in order. So each model's
   training step (the trainer's own, at batch 128, with its penalty and SparseAdagrad) and
   evaluation forward are counted, on this CPU, operator by operator (``TorchDispatchMode``;
   views launch nothing and are not counted), with their matrix-product FLOPs
   (``FlopCounterMode``) and the bytes their outputs hold. The host's cost of an operator is
   measured here (the same step on a 2-row batch: the step's time over its operators)
   plus an assumed launch cost; the device's cost is an assumed minimum kernel time per
   operator plus FLOPs and memory traffic at assumed rates (``GpuAssumptions``, stated in the
   output). A step takes at least the larger of the two (the host queues ahead) and at most
   their sum (sparse gradients' coalescing waits for the device, so the host cannot run far
   ahead); both are reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from harness import REPO, emit, env_threads
from throughput import cpu_pressure, load_average
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from aoaffm.config import load_config
from aoaffm.data import build_dataset, fetch_sources, load_processed
from aoaffm.experiments import GROUPS, build_model, plan, train_config
from aoaffm.train import loop, train_model
from aoaffm.train.penalty import L2Penalty

DATASET = "frappe"
PHASES = ("train_s", "train_rmse_s", "validation_s", "checkpoint_s", "rest_s")
PUBLISHED = REPO / "reports" / "published" / "frappe" / "runs"


# --------------------------------------------------------------------------- 1. epoch split


def timed_runs(cfg: dict) -> list:
    """The distinct kinds of run the profile trains, each at its first seed and K = 256:
    pre-training (no dropout), Table 3's models, Table 2's attention models."""
    chosen = {}
    for group in ("pretrain", "table3", "table2"):
        for spec in plan(cfg, group, DATASET, searched=False):
            key = (group, spec.model)
            if spec.embedding_size == 256 and key not in chosen:
                chosen[key] = spec
    return list(chosen.values())


class EpochClock:
    """When each epoch starts (the trainer's ``_epoch``, wrapped for this process) and ends
    (the end-of-epoch callback, after the checkpoint and the dvclive log)."""

    def __init__(self):
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.rmse_s: dict[str, float] = defaultdict(float)
        original_epoch, original_rmse = loop._Trainer._epoch, loop._Trainer._rmse
        clock = self

        def epoch(trainer, number):
            clock.starts.append(time.perf_counter())
            return original_epoch(trainer, number)

        def rmse(trainer, split):
            started = time.perf_counter()
            try:
                return original_rmse(trainer, split)
            finally:
                clock.rmse_s[split] += time.perf_counter() - started

        self._patches = {"_epoch": epoch, "_rmse": rmse}
        self._originals = {"_epoch": original_epoch, "_rmse": original_rmse}

    def __enter__(self):
        for name, patch in self._patches.items():
            setattr(loop._Trainer, name, patch)
        return self

    def __exit__(self, *exc):
        for name, original in self._originals.items():
            setattr(loop._Trainer, name, original)

    def on_epoch_end(self, entry: dict) -> None:
        self.ends.append(time.perf_counter())


def time_run(spec, cfg: dict, data, args) -> dict:
    """Train ``spec`` for ``args.epochs`` epochs into a temporary folder; the phases."""
    spec = dataclasses.replace(spec, epochs=args.epochs, pretrained=None)
    config = train_config(spec, cfg)
    if args.device is not None:
        config = dataclasses.replace(config, device=args.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seed_everything's deterministic-algorithm notes
        model = build_model(spec, data)
    with tempfile.TemporaryDirectory(prefix="protocol-time-") as run_dir, EpochClock() as clock:
        started = time.perf_counter()
        train_model(model, data, config, run_dir, progress=False, on_epoch_end=clock.on_epoch_end)
        ended = time.perf_counter()
        history = json.loads((Path(run_dir) / loop.HISTORY_FILE).read_text())
    epochs = []
    for entry, start, end in zip(history, clock.starts, clock.ends, strict=True):
        phases = {
            "train_s": entry["time_s"],
            "train_rmse_s": entry["train_rmse_time_s"],
            "validation_s": entry["validation_time_s"],
            "checkpoint_s": entry["checkpoint_time_s"],
        }
        phases["rest_s"] = (end - start) - sum(phases.values())
        epochs.append({"epoch": entry["epoch"], "wall_s": end - start, **phases})
    mean = {key: float(np.mean([e[key] for e in epochs])) for key in ("wall_s", *PHASES)}
    overhead = mean["wall_s"] - mean["train_s"]
    return {
        "group": spec.group,
        "model": spec.model,
        "run_id": spec.run_id,
        "k": spec.embedding_size,
        "dropout": spec.dropout,
        "lambda": spec.lambda_,
        "batch_size": spec.batch_size,
        "train_rmse_rows": spec.train_rmse_rows,
        "epochs_timed": len(epochs),
        "epochs": epochs,
        "epoch": mean,
        # the target of issue 14 item 2: (evaluation + checkpoint + rest) / training pass
        "overhead_ratio": overhead / mean["train_s"],
        "setup_s": clock.starts[0] - started,
        "end_s": ended - clock.ends[-1],
        "test_s": clock.rmse_s.get("test", 0.0),
    }


# --------------------------------------------------------------------------- 2. projection


def published_epochs(root: Path = PUBLISHED) -> dict[tuple[str, str], list[int]]:
    """Epochs of each published run, by (group, model)."""
    found: dict[tuple[str, str], list[int]] = defaultdict(list)
    for path in sorted(root.glob(f"*/{DATASET}/*/history.json")):
        group, model = path.parts[-4], path.parent.name.split("-k", 1)[0]
        found[(group, model)].append(len(json.loads(path.read_text())))
    return found


def epochs_of(spec, published: dict, assumed: int) -> tuple[float, str]:
    """Expected epochs of a run and where the figure comes from."""
    same = published.get((spec.group, spec.model))
    if same:
        return float(np.mean(same)), f"published {spec.group} runs"
    model = [  # a pre-training (no dropout) says little of a run with dropout
        n for (g, m), runs in published.items() for n in runs if m == spec.model and g != "pretrain"
    ]
    if model:
        return float(np.mean(model)), f"published {spec.model} runs (other groups)"
    return float(assumed), "assumed"


def profile_runs(cfg: dict) -> list:
    """Every run the profile trains, once per identity (a sweep point that is a table run
    is trained once)."""
    runs, seen = [], set()
    for group in GROUPS:
        for spec in plan(cfg, group, DATASET, searched=False):
            if spec.run_id not in seen:
                seen.add(spec.run_id)
                runs.append(spec)
    return runs


def table3_runs(cfg: dict) -> list:
    """Table 3's Frappe column: its baselines, the first seed of the attention models it
    shows (from Table 2's runs), and the pre-trainings they start from."""
    table3 = plan(cfg, "table3", DATASET, searched=False)
    first_seed = [
        s
        for s in plan(cfg, "table2", DATASET, searched=False)
        if s.seed == cfg["seed"] and s.model in ("afm", "aoafm", "aoaffm")
    ]
    needed = {s.pretrained for s in table3 + first_seed if s.pretrained}
    pretrain = [s for s in plan(cfg, "pretrain", DATASET, searched=False) if s.run_id in needed]
    return pretrain + table3 + first_seed


def timing_key(spec) -> tuple[str, str]:
    """The timed run whose rate prices ``spec``: FM and FFM without dropout run as their
    pre-training (FFM's fused step), the attention models as Table 2's, the rest Table 3's."""
    if spec.model in ("fm", "ffm") and spec.dropout == 0:
        return ("pretrain", spec.model)
    if spec.model in ("afm", "aoafm", "affm", "aoaffm"):
        return ("table2", spec.model)
    return ("table3", spec.model)


def project(runs: list, timed: dict, published: dict, assumed: int) -> dict:
    hours, by_group, sources = 0.0, defaultdict(float), defaultdict(int)
    epochs_total = 0.0
    for spec in runs:
        t = timed[timing_key(spec)]
        epochs, source = epochs_of(spec, published, assumed)
        seconds = t["setup_s"] + t["end_s"] + epochs * t["epoch"]["wall_s"]
        hours += seconds / 3600
        by_group[spec.group] += seconds / 3600
        sources[source] += 1
        epochs_total += epochs
    return {
        "runs": len(runs),
        "epochs": epochs_total,
        "hours": hours,
        "hours_by_group": dict(by_group),
        "epoch_sources": dict(sources),
    }


def project_gpu(runs: list, gpu: dict, cfg: dict, data, published: dict, assumed: int) -> dict:
    """The same runs priced from ``gpu_check.py``'s Frappe rates: per epoch, the training
    rows at its training rate and the evaluated rows at its evaluation rate."""
    rates = {c["model"]: c for c in gpu["throughput"] if c["dataset"] == DATASET and not c["bf16"]}
    train_rows = len(data.split("train").labels)
    validation_rows = len(data.split("validation").labels)
    seconds = 0.0
    for spec in runs:
        rate = rates[spec.model]
        evaluated = min(spec.train_rmse_rows or train_rows, train_rows) + validation_rows
        epoch_s = train_rows / rate["train_samples_per_s"] + evaluated / rate["eval_samples_per_s"]
        seconds += epochs_of(spec, published, assumed)[0] * epoch_s
    return {"device_name": gpu.get("device_name"), "runs": len(runs), "hours": seconds / 3600}


# --------------------------------------------------------------------------- 3. a GPU, assumed


@dataclasses.dataclass(frozen=True)
class GpuAssumptions:
    """What the projection assumes of one GPU, since none was measured (the figures are
    an H200's order of magnitude: 67 TFLOP/s fp32 and 4.8 TB/s peak)."""

    launch_s: float = 5e-6  # cudaLaunchKernel and the driver, per kernel, on top of PyTorch's
    kernel_s: float = 3e-6  # the shortest a kernel takes on the device, launch latency included
    flops_per_s: float = 30e12  # fp32 matrix products (not TF32, torch's default) actually reached
    bytes_per_s: float = 2e12  # memory traffic reached: each operator reads ~2x what it writes


# aten operators that launch no kernel though torch does not tag them as views
METADATA = (torch.ops.aten.detach, torch.ops.aten._unsafe_view, torch.ops.aten.is_coalesced)


class OperatorCount(TorchDispatchMode):
    """Counts the aten operators run inside it (each one kernel on a GPU; views none) and the
    bytes of their outputs. Approximate by a few per step both ways: Adagrad's step counters
    and the CPU-only look at a sparse gradient's order are counted though a GPU run launches
    no kernel for them, and a sparse gradient's coalesce counts once though CUDA sorts it in
    several kernels."""

    def __init__(self):
        super().__init__()
        self.operators = 0
        self.output_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.namespace == "aten" and not func.is_view and func.overloadpacket not in METADATA:
            self.operators += 1
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                    self.output_bytes += t.numel() * t.element_size()
                elif isinstance(t, torch.Tensor):  # a sparse gradient: its indices and values
                    self.output_bytes += t._values().numel() * t.element_size()
        return out


def _counted(call) -> dict:
    with FlopCounterMode(display=False) as flops, OperatorCount() as ops:
        call()
    return {"operators": ops.operators, "flops": flops.get_total_flops(), "bytes": ops.output_bytes}


def count_operators(spec, cfg: dict, data, eval_rows: int = 256) -> dict:
    """One training step (batch ``spec.batch_size``) and one evaluation forward of the
    reference model, counted; the host's seconds per operator measured on a 2-row batch."""
    config = train_config(spec, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(dataclasses.replace(spec, pretrained=None), data)
    penalty = L2Penalty.for_model(model, config.lambda_attention, config.lambda_interaction)
    optimizer = loop.build_optimizer(model, loop.sparse_parameters(model), config)
    step = loop.training_step(model, optimizer, penalty=penalty)
    train = data.split("train")

    def rows(n):
        return (
            torch.tensor(np.asarray(train.ids[:n]), dtype=torch.long),
            None if train.values is None else torch.tensor(np.asarray(train.values[:n])),
            torch.tensor(np.asarray(train.labels[:n]), dtype=torch.float32),
        )

    model.train()
    batch = rows(spec.batch_size)
    step(*batch)  # the optimizer's state exists from here on, as in a run
    training = _counted(lambda: step(*batch))
    tiny = rows(2)
    for _ in range(3):
        step(*tiny)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        step(*tiny)
        times.append(time.perf_counter() - started)
    host_s = min(times) / _counted(lambda: step(*tiny))["operators"]
    model.eval()
    ids, values, _ = rows(eval_rows)
    with torch.inference_mode():
        evaluation = _counted(lambda: model(ids, values))
    return {
        "train_step": training,
        "eval_forward": {**evaluation, "rows": eval_rows},
        "host_s_per_operator": host_s,
    }


def host_seconds_per_operator(counts: dict) -> float:
    """PyTorch's host cost of one operator: the median over the models' 2-row steps (the
    deep models' steps are not all overhead even on 2 rows: their dense Adagrad updates
    every weight, 2.5-6 MB of them)."""
    return float(np.median([c["host_s_per_operator"] for c in counts.values()]))


def project_gpu_assumed(
    runs: list, counts: dict, data, published: dict, assumed: int, gpu: GpuAssumptions
) -> dict:
    """The runs priced on one assumed GPU: per epoch, its training steps and the evaluation
    of the training-RMSE rows and the validation split in ``eval_batch_size`` batches."""
    train_rows = len(data.split("train").labels)
    validation_rows = len(data.split("validation").labels)
    host_op = host_seconds_per_operator(counts) + gpu.launch_s
    bounds = {"lower": 0.0, "upper": 0.0}
    for spec in runs:
        c = counts[spec.model]

        def seconds(counted: dict, scale: float) -> tuple[float, float]:
            host = counted["operators"] * host_op
            device = (
                counted["operators"] * gpu.kernel_s
                + scale * counted["flops"] / gpu.flops_per_s
                + scale * 3 * counted["bytes"] / gpu.bytes_per_s
            )
            return max(host, device), host + device

        step = seconds(c["train_step"], 1.0)
        eval_batch = min(spec.eval_batch_size, train_rows)
        forward = seconds(c["eval_forward"], eval_batch / c["eval_forward"]["rows"])
        evaluated = min(spec.train_rmse_rows or train_rows, train_rows) + validation_rows
        steps, eval_batches = train_rows // spec.batch_size, -(-evaluated // eval_batch)
        epochs = epochs_of(spec, published, assumed)[0]
        for i, bound in enumerate(("lower", "upper")):
            bounds[bound] += epochs * (steps * step[i] + eval_batches * forward[i])
    return {
        "runs": len(runs),
        "hours_lower": bounds["lower"] / 3600,
        "hours_upper": bounds["upper"] / 3600,
        "host_s_per_operator": host_op - gpu.launch_s,
        "assumptions": dataclasses.asdict(gpu),
    }


# --------------------------------------------------------------------------- output


def markdown(results: list[dict], counts: dict, projections: dict, context: dict) -> str:
    lines = [
        f"Frappe {context['data']} ({context['train_rows']:,} training rows), "
        f"{context['threads']} thread(s), torch {context['torch']}, {context['epochs']} "
        f"epoch(s) per run; load average at start {context['load_start']}, at end "
        f"{context['load_end']}; CPU pressure (PSI some avg60) {context['pressure_start']} -> "
        f"{context['pressure_end']}.",
        "",
        "| run | model | dropout | λ | epoch (s) | training pass | train-RMSE rows "
        "| validation | checkpoint | rest | (eval + ckpt + rest) / train | setup | end (test) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for r in results:
        e = r["epoch"]
        lines.append(
            f"| {r['group']} | {r['model']} | {r['dropout']:g} | {r['lambda']:g} "
            f"| {e['wall_s']:.1f} | {e['train_s']:.1f} | {e['train_rmse_s']:.2f} "
            f"| {e['validation_s']:.2f} | {e['checkpoint_s']:.2f} | {e['rest_s']:.2f} "
            f"| {r['overhead_ratio']:.0%} | {r['setup_s']:.2f} "
            f"| {r['end_s']:.2f} ({r['test_s']:.2f}) |"
        )
    lines += [
        "",
        "Reference models' operators (one GPU kernel each), FLOPs and output bytes; the host's "
        "seconds per operator measured here on a 2-row batch:",
        "",
        "| model | step operators | step GFLOP | step MB | eval operators "
        "| eval GFLOP per 1k rows | host µs / operator |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, c in counts.items():
        t, e = c["train_step"], c["eval_forward"]
        lines.append(
            f"| {model} | {t['operators']} | {t['flops'] / 1e9:.2f} | {t['bytes'] / 1e6:.1f} "
            f"| {e['operators']} | {e['flops'] / e['rows'] / 1e6:.2f} "
            f"| {c['host_s_per_operator'] * 1e6:.1f} |"
        )
    assumed = next((p["gpu_assumed"] for p in projections.values()), None)
    if assumed:
        lines += [
            "",
            f"Host per operator: {assumed['host_s_per_operator'] * 1e6:.1f} µs (the median); "
            "assumed GPU: " + ", ".join(f"{k} {v:g}" for k, v in assumed["assumptions"].items()),
        ]
    lines += [
        "",
        "| projection | runs | epochs | hours on this machine | one GPU, assumed (hours) "
        "| one GPU, measured |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for name, p in projections.items():
        gpu, assumed_gpu = p.get("gpu"), p["gpu_assumed"]
        gpu_text = f"{gpu['hours']:.2f} ({gpu['device_name']})" if gpu else "not available"
        here = (f"{p['epochs']:.0f}", f"{p['hours']:.2f}") if "hours" in p else ("—", "not timed")
        lines.append(
            f"| {name} | {p['runs']} | {here[0]} | {here[1]} "
            f"| {assumed_gpu['hours_lower']:.2f}-{assumed_gpu['hours_upper']:.2f} | {gpu_text} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=1, help="epochs timed per run")
    parser.add_argument(
        "--models",
        default=None,
        help="time only these models (comma-separated; the projection needs all of them)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: params.yaml's)")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument(
        "--assumed-epochs",
        type=int,
        default=30,
        help="epochs of a run whose model has no published run",
    )
    parser.add_argument(
        "--gpu-check", type=Path, default=None, help="gpu_check.py --out JSON, for the GPU rates"
    )
    parser.add_argument(
        "--count-only",
        action="store_true",
        help="no CPU timing: count the operators and project the assumed GPU only (a minute)",
    )
    parser.add_argument("--data", type=Path, default=None, help="a processed nfm-rebuilt Frappe")
    parser.add_argument(
        "--mirror", default=None, help="data mirror (default: $AOAFFM_MIRROR or ../shared/datasets)"
    )
    parser.add_argument("--json", action="store_true", help="JSON on stdout, tables on stderr")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def frappe_data(cfg: dict, args):
    """The profile's Frappe (its variant, seed, negatives and split), built from the mirror."""
    if args.data is not None:
        return load_processed(args.data), None
    variant = cfg["data"][DATASET]["source"]
    workdir = tempfile.TemporaryDirectory(prefix="protocol-time-frappe-")
    mirror = args.mirror or REPO.parent / "shared" / "datasets"  # $AOAFFM_MIRROR wins
    raw = fetch_sources(DATASET, variant, Path(workdir.name) / "raw", mirror=mirror, progress=False)
    build_dataset(
        DATASET,
        variant,
        raw,
        Path(workdir.name) / "processed",
        seed=cfg["seed"],
        negatives_per_positive=cfg["data"]["negatives_per_positive"],
        split=cfg["data"]["split"],
        progress=False,
    )
    return load_processed(Path(workdir.name) / "processed"), workdir


def main(argv=None) -> int:
    args = parse_args(argv)
    env_threads(args.threads)
    cfg = load_config(args.params, profile="frappe")
    data, workdir = frappe_data(cfg, args)
    load_start, pressure_start = load_average(), cpu_pressure()
    started = time.perf_counter()
    runs = timed_runs(cfg)
    if args.models:
        wanted = {m.strip() for m in args.models.split(",")}
        runs = [s for s in runs if s.model in wanted]
    results = []
    for spec in [] if args.count_only else runs:
        print(f"protocol_time: {spec.group}/{spec.model} ...", file=sys.stderr, flush=True)
        results.append(time_run(spec, cfg, data, args))
    counts = {}
    for spec in runs:  # the reference model's operators, for the assumed GPU
        if spec.model not in counts:
            print(f"protocol_time: counting {spec.model} ...", file=sys.stderr, flush=True)
            counts[spec.model] = count_operators(spec, cfg, data)
    timed = {(r["group"], r["model"]): r for r in results}
    published = published_epochs()
    projections = {}
    gpu = json.loads(args.gpu_check.read_text()) if args.gpu_check else None
    for name, planned in (
        ("Table 3, Frappe column", table3_runs(cfg)),
        ("frappe profile", profile_runs(cfg)),
    ):
        if not all(s.model in counts for s in planned):
            continue  # --models left out a model this projection needs
        projections[name] = {"runs": len(planned)}
        if all(timing_key(s) in timed for s in planned):
            projections[name] = project(planned, timed, published, args.assumed_epochs)
        projections[name]["gpu_assumed"] = project_gpu_assumed(
            planned, counts, data, published, args.assumed_epochs, GpuAssumptions()
        )
        if gpu is not None:
            projections[name]["gpu"] = project_gpu(
                planned, gpu, cfg, data, published, args.assumed_epochs
            )
    context = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/protocol_time.py", *(argv or sys.argv[1:])]),
        "torch": torch.__version__,
        "threads": args.threads,
        "epochs": args.epochs,
        "data": data.meta.get("variant"),
        "train_rows": len(data.split("train").labels),
        "load_start": load_start,
        "load_end": load_average(),
        "pressure_start": pressure_start,
        "pressure_end": cpu_pressure(),
        "wall_s": time.perf_counter() - started,
    }
    report = {
        "context": context,
        "runs": results,
        "operator_counts": counts,
        "projections": projections,
    }
    table = markdown(results, counts, projections, context)
    if args.out is not None:
        from aoaffm.io import write_json

        write_json(args.out, report)
    emit(table, report, args.json)
    if workdir is not None:
        workdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

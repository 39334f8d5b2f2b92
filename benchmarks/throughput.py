"""Training throughput of our models against two peer libraries on real Frappe: the PyPI
package torchfm 0.7.0 (pytorch-fm: FM, FFM, AFM) and FuxiCTR 2.3.10 (reczoo: FM, FFM, HOFM,
Wide&Deep, DeepCrossing, AFM), plus the floors each model is measured against.

    python benchmarks/throughput.py              # Markdown table
    python benchmarks/throughput.py --json       # JSON list of {model, k, ours, peer, ratio,
                                                 #   peer_lib}: one row per peer library
    python benchmarks/throughput.py --fuxictr-zoo ../FuxiCTR/model_zoo   # with FuxiCTR

FuxiCTR's six models are not in its PyPI package but in its GitHub repository's
``model_zoo``: without ``--fuxictr-zoo`` (or ``$FUXICTR_MODEL_ZOO``), or without ``fuxictr``
installed (``pip install -e ".[peers]"``), its rows are left out and the reason is printed.
How it is run and what had to be adapted: ``benchmarks/fuxictr_peer.py``.

Both sides train on the same rows (Frappe rebuilt from the raw archive in the data mirror,
202,026 training rows), in the same process, with the same batch size, K, Adagrad settings
and thread count; the rows come from tensors in memory, picked by a seeded index
permutation. Timed windows alternate between our model, the peer's and the floor probe, so
that a load change on a shared machine hits all of them; a side's figure is its median
window (samples/s) after warm-up.

Floors, measured in the same run:
- attention models: the attention network's three matrix products of a step alone
  (forward W X, backward G W and Gᵀ X at [B·P, K] x [K, t]);
- Wide&Deep and DeepCross: the same three products for every Linear layer of the network
  (B x F·K input), which both libraries run through the same BLAS;
- FFM: the bytes a step must move for the embedding rows it touches, at the bandwidth of a
  large tensor copy: distinct features per batch × F × K × 4 bytes × 5 accesses (read the
  weights, write the gradient, read and write Adagrad's sum, write the weights).

The process runs with the trainer's CPU malloc settings (``aoaffm.train.allocator``: freed
blocks kept for reuse instead of faulted back in every step), which every side shares;
``--default-malloc`` leaves glibc's defaults.

Peak memory is the growth of the resident set (VmRSS -> VmHWM, Linux /proc) of a fresh
child process from just before it builds the model to after ``--memory-steps`` steps;
tracemalloc does not see torch's allocations.

torchfm 0.7.0 and current NumPy/PyTorch: its layers build field offsets with ``np.long``,
which NumPy 1.24-1.26 removed (NumPy 2 restored it as C long); ``import_torchfm`` adds the
alias when it is missing, in this process only. The peer's models end in a sigmoid; they are
trained on 0.5 Σ (σ(ŷ) - y01)² with labels mapped to 0/1, which costs the same as ours.
torchfm takes per-field ids and adds its own offsets, so it gets our global ids minus the
field offsets, as int64.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from harness import (
    REPO,
    AttentionMatmuls,
    DenseMatmuls,
    IndexBatches,
    OurStep,
    Rows,
    alternate,
    copy_bandwidth,
    emit,
    env_threads,
    field_aware_rows_touched,
    in_child,
    median,
    reset_peak_rss,
    rss_bytes,
    spread,
)
from tqdm import tqdm

from aoaffm.data import build_dataset, fetch_sources, load_processed
from aoaffm.fast import kernels
from aoaffm.metrics import sum_squared_error
from aoaffm.models import create
from aoaffm.models.deep import DEEPCROSS_HIDDEN, WIDE_DEEP_HIDDEN

# The models each peer library has of ours (neither has AoAFM, AFFM or AoAFFM).
PEER_MODELS = {
    "torchfm": {"fm", "ffm", "afm"},
    "fuxictr": {"fm", "ffm", "hofm", "wide_deep", "deepcross", "afm"},
}
PEER_LIBS = tuple(PEER_MODELS)
ATTENTION = {"afm", "aoafm", "affm", "aoaffm"}
HIDDEN = {"wide_deep": list(WIDE_DEEP_HIDDEN), "deepcross": list(DEEPCROSS_HIDDEN)}
FFM_ACCESSES = 5  # read weights, write gradient, read + write Adagrad's sum, write weights


def import_torchfm():
    """torchfm's model classes, with NumPy's ``np.long`` alias restored if this NumPy lacks
    it (removed in 1.24, back in 2.0)."""
    if not hasattr(np, "long"):
        np.long = np.int64  # torchfm.layer: np.array(..., dtype=np.long)
    from torchfm.model.afm import AttentionalFactorizationMachineModel
    from torchfm.model.ffm import FieldAwareFactorizationMachineModel
    from torchfm.model.fm import FactorizationMachineModel

    return {
        "fm": lambda dims, k, t: FactorizationMachineModel(dims, k),
        "ffm": lambda dims, k, t: FieldAwareFactorizationMachineModel(dims, k),
        "afm": lambda dims, k, t: AttentionalFactorizationMachineModel(dims, k, t, (0.0, 0.0)),
    }


class PeerStep:
    """One training step of a torchfm model: per-field int64 ids, dense Adagrad (its
    embeddings have dense gradients), 0.5 Σ (σ(ŷ) - y01)²."""

    def __init__(self, model, rows: Rows, offsets, batch_size, learning_rate, seed=0):
        self.model = model.train()
        self.ids = (rows.ids - torch.as_tensor(offsets, dtype=rows.ids.dtype)).long()
        self.labels = (rows.labels + 1) / 2
        self.batches = IndexBatches(len(rows), batch_size, seed)
        self.optimizer = torch.optim.Adagrad(
            model.parameters(), lr=learning_rate, initial_accumulator_value=1e-8
        )

    def __call__(self) -> None:
        index = next(self.batches)
        loss = 0.5 * (self.model(self.ids[index]) - self.labels[index]).square().sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


# --------------------------------------------------------------------------- setup


def frappe(args) -> tuple:
    """The processed Frappe data set: ``--data`` or rebuilt from the mirror's raw archive."""
    if args.data is not None:
        return load_processed(args.data), None
    workdir = tempfile.TemporaryDirectory(prefix="throughput-frappe-")
    mirror = args.mirror or REPO.parent / "shared" / "datasets"  # $AOAFFM_MIRROR wins
    raw = fetch_sources("frappe", "raw", Path(workdir.name) / "raw", mirror=mirror, progress=False)
    build_dataset(
        "frappe", "raw", raw, Path(workdir.name) / "frappe", seed=args.seed, progress=False
    )
    return load_processed(Path(workdir.name) / "frappe"), workdir


def make_step(side: str, name: str, k: int, data, rows: Rows, args, *, bf16=False):
    """One training step of ``side``: "ours", "torchfm" or "fuxictr"."""
    torch.manual_seed(args.seed)
    if side == "ours":
        model = create(name, data.n_features, data.n_fields, k, attention_size=args.attention_size)
        return OurStep(model, rows, args.batch_size, args.learning_rate, seed=args.seed, bf16=bf16)
    if side == "fuxictr":
        import fuxictr_peer

        model = fuxictr_peer.build(
            name,
            list(data.field_sizes),
            k,
            attention_size=args.attention_size,
            hidden_sizes=HIDDEN.get(name),
            learning_rate=args.learning_rate,
            zoo=args.fuxictr_zoo,
        )
        return fuxictr_peer.FuxiStep(
            model, rows, data.meta["field_offsets"], args.batch_size, args.seed
        )
    model = import_torchfm()[name](list(data.field_sizes), k, args.attention_size)
    return PeerStep(
        model, rows, data.meta["field_offsets"], args.batch_size, args.learning_rate, args.seed
    )


def _memory_child(queue, side, name, k, args) -> None:
    """In a fresh process: resident-set growth while building and training one model."""
    env_threads(args.threads, keep_freed=not args.default_malloc)
    warnings.simplefilter("ignore")
    data = load_processed(args.processed)
    rows = Rows.from_split(data.split("train"))
    if side == "torchfm":
        import_torchfm()
    if side == "fuxictr":
        import fuxictr.pytorch.models  # noqa: F401 (its imports are not the model's memory)
    if not reset_peak_rss():
        queue.put(None)
        return
    before = rss_bytes("VmRSS")
    step = make_step(side, name, k, data, rows, args)
    for _ in range(args.memory_steps):
        step()
    queue.put(rss_bytes("VmHWM") - before)


def peak_memory(side, name, k, args) -> int | None:
    return in_child(_memory_child, side, name, k, args)


# --------------------------------------------------------------------------- one cell


def peers_of(name: str, args) -> list[str]:
    return [lib for lib in args.peers if name in PEER_MODELS[lib]]


def measure(name: str, k: int, data, rows: Rows, args, bandwidth: float) -> dict:
    """Ours, each peer library that has the model and the floor probe, in alternating
    windows: every ratio comes from one run."""
    sides = {"ours": make_step("ours", name, k, data, rows, args)}
    for lib in peers_of(name, args):
        sides[lib] = make_step(lib, name, k, data, rows, args)
    n_pairs = data.n_fields * (data.n_fields - 1) // 2
    if name in ATTENTION:
        sides["floor"] = AttentionMatmuls(args.batch_size * n_pairs, k, args.attention_size)
    if name in HIDDEN:
        sides["floor"] = DenseMatmuls(args.batch_size, deep_layers(name, data.n_fields * k))
    timings = alternate(sides, steps=args.steps, windows=args.windows, warmup=args.warmup)
    per_second = {side: args.batch_size / median(t) for side, t in timings.items()}
    result = {
        "model": name,
        "k": k,
        "ours": per_second["ours"],
        "ours_step_ms": 1e3 * median(timings["ours"]),
        "spread": {side: spread(t) for side, t in timings.items()},
    }
    for lib in peers_of(name, args):
        result[lib] = per_second[lib]
        result[f"{lib}_ratio"] = per_second["ours"] / per_second[lib]
        result[f"{lib}_step_ms"] = 1e3 * median(timings[lib])
    if name in HIDDEN:
        result["floor"] = "dense matmuls"
        result["floor_step_ms"] = 1e3 * median(timings["floor"])
    if name in ATTENTION:
        result["floor"] = "attention matmuls"
        result["floor_step_ms"] = 1e3 * median(timings["floor"])
        result["floor_gflop"] = (
            AttentionMatmuls.flops(args.batch_size * n_pairs, k, args.attention_size) / 1e9
        )
    if name == "ffm":
        features = field_aware_rows_touched(rows.ids, sides["ours"].batches, 200)
        floor_bytes = features * data.n_fields * k * 4 * FFM_ACCESSES
        result["floor"] = "memory traffic"
        result["floor_bytes"] = floor_bytes
        result["floor_features_per_batch"] = features
        result["floor_step_ms"] = 1e3 * floor_bytes / bandwidth
    if "floor_step_ms" in result:
        result["from_floor"] = result["ours_step_ms"] / result["floor_step_ms"]
    if args.memory_steps > 0:
        for side in ("ours", *peers_of(name, args)):
            growth = peak_memory(side, name, k, args)
            result[f"{side}_peak_mib"] = None if growth is None else growth / 2**20
    return result


def deep_layers(name: str, width: int) -> list[tuple[int, int]]:
    """(in, out) of every Linear layer of Wide&Deep's MLP or DeepCross's residual units."""
    if name == "wide_deep":
        sizes = [width, *HIDDEN[name], 1]
        return list(zip(sizes[:-1], sizes[1:], strict=True))
    units = [(width, h) for h in HIDDEN[name]]
    return [layer for w, h in units for layer in ((w, h), (h, w))] + [(width, 1)]


def json_rows(results: list[dict]) -> list[dict]:
    """One row per (model, K, peer library); a model no peer has gets one row without."""
    rows = []
    for r in results:
        libs = [lib for lib in PEER_LIBS if lib in r] or [None]
        for lib in libs:
            rows.append(
                {
                    "model": r["model"],
                    "k": r["k"],
                    "ours": r["ours"],
                    "peer": r.get(lib),
                    "ratio": r.get(f"{lib}_ratio"),
                    "peer_lib": lib,
                }
            )
    return rows


# --------------------------------------------------------------------------- bf16


class BF16ProductsStep:
    """``step`` (float32 throughout) with only the dense matrix products in bf16 (the
    attention's three, the deep models' linear layers: ``aoaffm.fast.kernels.bf16_products``,
    what ``train.bf16_products`` trains with)."""

    def __init__(self, step: OurStep):
        self.step, self.model = step, step.model

    def __call__(self) -> None:
        with kernels.bf16_products():
            self.step()


def measure_bf16(name: str, k: int, data, rows: Rows, args) -> dict:
    """Our model in float32 and in bf16 (``--bf16-mode``: autocast, or only the attention's
    three products), same init and batches: throughput (alternating windows), then the
    validation RMSE of both after ``--bf16-steps`` steps."""
    products = args.bf16_mode == "products"
    bf16_step = (
        BF16ProductsStep(make_step("ours", name, k, data, rows, args))
        if products
        else make_step("ours", name, k, data, rows, args, bf16=True)
    )
    sides = {"fp32": make_step("ours", name, k, data, rows, args), "bf16": bf16_step}
    timings = alternate(sides, steps=args.steps, windows=args.windows, warmup=args.warmup)
    done = args.warmup + args.steps * args.windows
    for step in sides.values():
        for _ in range(max(0, args.bf16_steps - done)):
            step()
    validation = Rows.from_split(data.split("validation"))
    result = {"model": name, "k": k, "steps": max(done, args.bf16_steps)}
    for side, step in sides.items():
        result[f"{side}_samples_per_s"] = args.batch_size / median(timings[side])
        # products mode: both evaluated in float32, so the change is what training in bf16 did
        autocast = side == "bf16" and not products
        result[f"{side}_validation_rmse"] = validation_rmse(step, validation, bf16=autocast)
    result["speedup"] = result["bf16_samples_per_s"] / result["fp32_samples_per_s"]
    result["rmse_change"] = result["bf16_validation_rmse"] - result["fp32_validation_rmse"]
    return result


@torch.inference_mode()
def validation_rmse(step: OurStep, validation: Rows, *, bf16: bool, batch: int = 8192) -> float:
    """The trainer's evaluation: clipped RMSE in eval mode, bf16 autocast when trained so."""
    step.model.eval()
    total = 0.0
    for low in range(0, len(validation), batch):
        ids = validation.ids[low : low + batch].long()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            predictions = step.model(ids).float()
        total += float(sum_squared_error(predictions, validation.labels[low : low + batch]))
    step.model.train()
    return (total / len(validation)) ** 0.5


# --------------------------------------------------------------------------- output


def fmt(value, digits=0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def markdown(results: list[dict], bf16: list[dict], context: dict) -> str:
    lines = [
        f"Frappe train split ({context['train_rows']:,} rows), batch {context['batch_size']}, "
        f"{context['threads']} threads, Adagrad, float32; copy bandwidth "
        f"{context['bandwidth_gbs']:.1f} GB/s; load average at start {context['load_start']}, "
        f"at end {context['load_end']}; CPU pressure (PSI some avg60) at start "
        f"{context['pressure_start']}, at end {context['pressure_end']}.",
        "",
        "| model | K | ours (samples/s) | torchfm (samples/s) | ratio | FuxiCTR (samples/s) "
        "| ratio | ours ms/step | FuxiCTR ms/step | floor ms/step | × floor | ours peak MiB "
        "| torchfm peak MiB | FuxiCTR peak MiB | window spread |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | --- |",
    ]
    for r in results:
        noise = ", ".join(f"{side} {value:.0%}" for side, value in r["spread"].items())
        lines.append(
            f"| {r['model']} | {r['k']} | {fmt(r['ours'])} "
            f"| {fmt(r.get('torchfm'))} | {fmt(r.get('torchfm_ratio'), 2)} "
            f"| {fmt(r.get('fuxictr'))} | {fmt(r.get('fuxictr_ratio'), 2)} "
            f"| {fmt(r['ours_step_ms'], 2)} | {fmt(r.get('fuxictr_step_ms'), 2)} "
            f"| {fmt(r.get('floor_step_ms'), 2)} | {fmt(r.get('from_floor'), 2)} "
            f"| {fmt(r.get('ours_peak_mib'), 1)} | {fmt(r.get('torchfm_peak_mib'), 1)} "
            f"| {fmt(r.get('fuxictr_peak_mib'), 1)} | {noise} |"
        )
    for lib, reason in context.get("peers_left_out", {}).items():
        lines += ["", f"{lib} left out: {reason}"]
    if bf16:
        lines += [
            "",
            f"| model | K | float32 (samples/s) | bf16 {context['bf16_mode']} (samples/s) "
            "| speed-up | steps "
            "| validation RMSE float32 | validation RMSE bf16 | change |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in bf16:
            lines.append(
                f"| {r['model']} | {r['k']} | {fmt(r['fp32_samples_per_s'])} "
                f"| {fmt(r['bf16_samples_per_s'])} | {fmt(r['speedup'], 2)} | {r['steps']} "
                f"| {r['fp32_validation_rmse']:.5f} | {r['bf16_validation_rmse']:.5f} "
                f"| {r['rmse_change']:+.5f} |"
            )
    return "\n".join(lines)


def peer_version(lib: str) -> str:
    from importlib.metadata import version

    return version(lib)


def cpu_pressure() -> str:
    """Share of the last minute in which some runnable task waited for a CPU (Linux PSI):
    the best single sign that other work competed with the measurement."""
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as pressure:
            fields = dict(item.split("=") for item in pressure.readline().split()[1:])
        return f"{float(fields['avg60']):.0f}%"
    except (OSError, KeyError, ValueError):
        return "n/a"


def load_average() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        default="fm,ffm,hofm,wide_deep,deepcross,afm,aoaffm",
        help="comma-separated (ours: any aoaffm model; torchfm: fm, ffm, afm; FuxiCTR: fm, "
        "ffm, hofm, wide_deep, deepcross, afm)",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEER_LIBS),
        help="peer libraries, comma-separated (default: torchfm,fuxictr)",
    )
    parser.add_argument(
        "--fuxictr-zoo",
        default=None,
        help="the model_zoo folder of a reczoo/FuxiCTR checkout, where its models live "
        "(default: $FUXICTR_MODEL_ZOO; without it the FuxiCTR rows are left out)",
    )
    parser.add_argument("--k", default="64,256", help="embedding sizes, comma-separated")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--attention-size", type=int, default=256, help="t")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=7, help="timed windows per side")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per side")
    parser.add_argument(
        "--memory-steps",
        type=int,
        default=5,
        help="steps of the peak-memory child process (0: skip memory)",
    )
    parser.add_argument(
        "--bf16",
        default="",
        help="models to time also under bf16 autocast, with the RMSE effect "
        "(comma-separated, e.g. afm,aoaffm; default: none)",
    )
    parser.add_argument(
        "--bf16-steps", type=int, default=400, help="training steps before the bf16 RMSE comparison"
    )
    parser.add_argument(
        "--bf16-mode",
        choices=("autocast", "products"),
        default="autocast",
        help="--bf16's bf16 side: autocast over the model, or only the dense matrix products "
        "(train.bf16_products: the attention's three, the deep models' linear layers) with "
        "everything else float32",
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc thresholds as they are (default: the trainer's settings, "
        "aoaffm.train.allocator, for every side)",
    )
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="a processed Frappe folder (default: rebuild from the mirror)",
    )
    parser.add_argument(
        "--mirror", default=None, help="data mirror (default: $AOAFFM_MIRROR or ../shared/datasets)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the JSON list {model, k, ours, peer, ratio, peer_lib} on stdout "
        "(the table goes to stderr)",
    )
    parser.add_argument(
        "--details",
        type=Path,
        default=None,
        help="write every measurement (floors, memory, noise) to this JSON",
    )
    args = parser.parse_args(argv)
    args.peers = [lib.strip() for lib in args.peers.split(",") if lib.strip()]
    unknown = sorted(set(args.peers) - set(PEER_LIBS))
    if unknown:
        parser.error(f"unknown peer librar{'ies' if len(unknown) > 1 else 'y'} {unknown}")
    return args


def available_peers(args) -> dict[str, str]:
    """Drop the peer libraries that cannot run here from ``args.peers``; {lib: why}."""
    left_out = {}
    if "fuxictr" in args.peers:
        import fuxictr_peer

        args.fuxictr_zoo = fuxictr_peer.zoo_path(args.fuxictr_zoo)
        reason = fuxictr_peer.unavailable(args.fuxictr_zoo)
        if reason is not None:
            left_out["fuxictr"] = reason
    if "torchfm" in args.peers:
        try:
            import_torchfm()
        except ImportError as error:
            left_out["torchfm"] = f"torchfm cannot be imported ({error})"
    args.peers = [lib for lib in args.peers if lib not in left_out]
    for lib, reason in left_out.items():
        print(f"throughput: {lib} left out: {reason}", file=sys.stderr)
    return left_out


def main(argv=None) -> int:
    args = parse_args(argv)
    env_threads(args.threads, keep_freed=not args.default_malloc)
    peers_left_out = available_peers(args)
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    torch.sparse.check_sparse_tensor_invariants.disable()
    data, workdir = frappe(args)
    args.processed = str(data.path)  # for the peak-memory child processes
    rows = Rows.from_split(data.split("train"))
    load_start, pressure_start = load_average(), cpu_pressure()
    bandwidth = copy_bandwidth()
    cells = [(m, int(k)) for k in args.k.split(",") for m in args.models.split(",")]
    results = []
    for name, k in tqdm(cells, desc="throughput", unit="cell", file=sys.stderr):
        results.append(measure(name, k, data, rows, args, bandwidth))
    bf16_cells = [(m, int(k)) for k in args.k.split(",") for m in args.bf16.split(",") if m]
    bf16 = [
        measure_bf16(m, k, data, rows, args)
        for m, k in tqdm(
            bf16_cells, desc="bf16", unit="cell", file=sys.stderr, disable=not bf16_cells
        )
    ]
    context = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/throughput.py", *(argv or sys.argv[1:])]),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "peers": {lib: peer_version(lib) for lib in args.peers},
        "peers_left_out": peers_left_out,
        "bf16_mode": args.bf16_mode,
        "train_rows": len(rows),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "bandwidth_gbs": bandwidth / 1e9,
        "load_start": load_start,
        "load_end": load_average(),
        "pressure_start": pressure_start,
        "pressure_end": cpu_pressure(),
        "data": data.meta.get("variant"),
    }
    table = markdown(results, bf16, context)
    if args.details is not None:
        from aoaffm.io import write_json

        write_json(args.details, {"context": context, "results": results, "bf16": bf16})
    emit(table, json_rows(results), args.json)
    if workdir is not None:
        workdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

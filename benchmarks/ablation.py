"""What each hot-path change bought: our training step with the changes switched on one at a
time, timed in alternating windows in one process.

    python benchmarks/ablation.py                 # fm, ffm, afm, aoaffm at K = 256, 2 threads
    python benchmarks/ablation.py --dropout fm=0.4,ffm=0.4,afm=0.6,aoaffm=0.2   # Table 2's rates

Variants (cumulative):
  autograd        the reference models of ``aoaffm.models`` and torch's ``torch.optim.Adagrad``
  +SparseAdagrad  the trainer's optimizer (``aoaffm.train.optim``), torch's arithmetic
  +backward       the backend's forward (``aoaffm.fast.models``) with the C++ kernels off: the
                  hand-written backward passes of ``aoaffm.fast.kernels`` (FM interaction
                  and lookups, pair products, field-aware pair products and dots, attention
                  pooling)
  +C++ kernels    the fused CPU kernels of ``aoaffm.fast.native`` (FM's and FFM's lookups,
                  dots and gradient rows, the attention models' pair products, scores,
                  softmax, pooling and gradient rows, the linear part, dropout masks,
                  Adagrad's row and dense updates)
  +fused steps    FFM's whole step in one call, the attention models' without autograd
                  (``aoaffm.fast.steps``): what the trainer runs on the CPU

(The hand-written backward passes came first historically; the variants are ordered as the
code now composes them.) Each variant runs the same model object through the code paths the
tests compare for equal results (``native.enabled`` switched per window). Every
variant runs with the trainer's malloc settings (``aoaffm.train.allocator``, process-wide);
``--default-malloc`` leaves glibc's defaults, to see what those settings buy.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch
from harness import OurStep, Rows, alternate, env_threads, median
from throughput import frappe

from aoaffm import fast
from aoaffm.fast import native
from aoaffm.models import create
from aoaffm.train.loop import training_step

VARIANTS = ("autograd", "+SparseAdagrad", "+backward", "+C++ kernels", "+fused steps")


class Variant:
    def __init__(self, variant: str, name: str, k: int, data, rows: Rows, args):
        torch.manual_seed(args.seed)
        model = create(
            name, data.n_features, data.n_fields, k, attention_size=args.attention_size,
            dropout=args.dropout.get(name, 0.0),
        )  # fmt: skip
        self.step = OurStep(model, rows, args.batch_size, args.learning_rate, seed=args.seed)
        level = VARIANTS.index(variant)
        fast_model = fast.select(model, rows.ids.device) if level >= 2 else None
        optimizer = self.step.optimizer  # the trainer's: C++ updates with the backend
        if level < 1:  # torch's Adagrad, same groups and settings
            optimizer = torch.optim.Adagrad(optimizer.param_groups, initial_accumulator_value=1e-8)
        elif level < 3:
            optimizer.kernels = None  # SparseAdagrad's torch arithmetic
        self.step.optimizer = optimizer
        self.step.step = training_step(model, optimizer, fast_model=fast_model, fuse=level >= 4)
        self.native = level >= 3

    def __call__(self) -> None:
        with native.enabled(self.native):
            self.step()


def rates(text: str) -> dict[str, float]:
    """``"fm=0.4,afm=0.6"`` -> {"fm": 0.4, "afm": 0.6}."""
    try:
        return {name: float(rate) for name, rate in (p.split("=") for p in text.split(",") if p)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected model=rate,... got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--models", default="fm,ffm,afm,aoaffm")
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--attention-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument("--data", default=None, help="processed Frappe (default: rebuild)")
    parser.add_argument("--mirror", default=None)
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc's malloc thresholds as they are"
    )
    parser.add_argument(
        "--dropout", type=rates, default={}, help="per-model dropout, e.g. ffm=0.4,afm=0.6"
    )
    args = parser.parse_args(argv)
    env_threads(args.threads, keep_freed=not args.default_malloc)
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    torch.sparse.check_sparse_tensor_invariants.disable()
    data, workdir = frappe(args)
    rows = Rows.from_split(data.split("train"))
    print(
        f"K = {args.k}, batch {args.batch_size}, {args.threads} threads, dropout "
        f"{args.dropout or 'none'}; ms per step (median window), speed-up over the first variant"
    )
    print("\n| model | " + " | ".join(VARIANTS) + " |")
    print("| --- |" + " ---: |" * len(VARIANTS))
    for name in args.models.split(","):
        sides = {v: Variant(v, name, args.k, data, rows, args) for v in VARIANTS}
        timings = alternate(sides, steps=args.steps, windows=args.windows, warmup=args.warmup)
        ms = {v: 1e3 * median(t) for v, t in timings.items()}
        cells = [f"{ms[v]:.2f} ({ms[VARIANTS[0]] / ms[v]:.2f}x)" for v in VARIANTS]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    if workdir is not None:
        workdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

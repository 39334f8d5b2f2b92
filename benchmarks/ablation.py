"""What each hot-path change bought: our training step with the changes switched on one at a
time, in the order they were made, timed in alternating windows in one process.

    python benchmarks/ablation.py                 # fm, ffm, afm, aoaffm at K = 256, 2 threads
    python benchmarks/ablation.py --dropout fm=0.4,ffm=0.4,afm=0.6,aoaffm=0.2   # Table 2's rates

Variants (cumulative):
  autograd        the models' plain compositions (what ``aoaffm.models`` computed before the
                  kernels) and torch's ``torch.optim.Adagrad``
  +backward       the hand-written backward passes of ``aoaffm.models.kernels`` (FM
                  interaction, pair products, field-aware pair products, attention pooling)
  +cpu kernels    FFM's pair dots and FM's fused lookups (CPU only)
  +SparseAdagrad  the trainer's optimizer (``aoaffm.train.optim``)
  +C++ kernels    the fused CPU kernels of ``aoaffm.models.native`` (FM's and FFM's lookups,
                  dots and gradient rows, the attention models' pair products, scores,
                  softmax, pooling and gradient rows, the linear part, Adagrad's row update)
  +fused steps    FFM's whole step in one call, the attention models' without autograd
                  (``aoaffm.train.fused``): the current code

The switches are the kernels' own enable functions (patched per window), so every variant
runs the same model object's code paths that the tests compare for equal results. Every
variant runs with the trainer's malloc settings (``aoaffm.train.allocator``, process-wide);
``--default-malloc`` leaves glibc's defaults, to see what those settings buy.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

import torch
from harness import OurStep, Rows, alternate, env_threads, median
from throughput import frappe

from aoaffm.models import create, kernels, native
from aoaffm.train.loop import training_step

VARIANTS = (
    "autograd",
    "+backward",
    "+cpu kernels",
    "+SparseAdagrad",
    "+C++ kernels",
    "+fused steps",
)


@contextlib.contextmanager
def switches(variant: str):
    level = VARIANTS.index(variant)
    saved = kernels.fused_enabled, kernels.cpu_fused_enabled
    if level < 1:
        kernels.fused_enabled = lambda tensor: False
    if level < 2:
        kernels.cpu_fused_enabled = lambda tensor: False
    try:
        with native.enabled(level >= 4):
            yield
    finally:
        kernels.fused_enabled, kernels.cpu_fused_enabled = saved


class Variant:
    def __init__(self, variant: str, name: str, k: int, data, rows: Rows, args):
        torch.manual_seed(args.seed)
        model = create(
            name, data.n_features, data.n_fields, k, attention_size=args.attention_size,
            dropout=args.dropout.get(name, 0.0),
        )  # fmt: skip
        self.step = OurStep(model, rows, args.batch_size, args.learning_rate, seed=args.seed)
        level = VARIANTS.index(variant)
        if level < 3:  # torch's Adagrad, same groups and settings
            self.step.optimizer = torch.optim.Adagrad(
                self.step.optimizer.param_groups, initial_accumulator_value=1e-8
            )
        self.step.step = training_step(model, self.step.optimizer, fuse=level >= 5)
        self.variant = variant

    def __call__(self) -> None:
        with switches(self.variant):
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

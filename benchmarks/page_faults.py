"""Page faults, system time and wall time per training step in a fresh process, with the
trainer's malloc settings (``aoaffm.train.allocator``) or glibc's defaults.

    python benchmarks/page_faults.py                    # aoaffm, K = 256, both settings
    python benchmarks/page_faults.py --models afm,aoaffm --k 64

Each (model, setting) runs in its own child process (malloc settings are process-wide and
cannot be undone), on real Frappe, the trainer's step, after ``--warmup`` steps; the counts
are ``getrusage`` minor faults and system CPU time over ``--steps`` steps. Settings alternate
per repeat so that a load change hits both.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import warnings

from harness import Rows, env_threads, in_child
from throughput import frappe, make_step

from aoaffm.data import load_processed

SETTINGS = ("trainer", "glibc default")


def _child(queue, name, k, setting, args) -> None:
    env_threads(args.threads, keep_freed=setting == "trainer")
    warnings.simplefilter("ignore")
    data = load_processed(args.processed)
    step = make_step("ours", name, k, data, Rows.from_split(data.split("train")), args)
    for _ in range(args.warmup):
        step()
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.steps):
        step()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    queue.put(
        {
            "faults": (after.ru_minflt - before.ru_minflt) / args.steps,
            "system_ms": 1e3 * (after.ru_stime - before.ru_stime) / args.steps,
            "wall_ms": 1e3 * wall / args.steps,
        }
    )


def measure(name, k, setting, args) -> dict:
    return in_child(_child, name, k, setting, args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="aoaffm")
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--attention-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument("--data", default=None, help="processed Frappe (default: rebuild)")
    parser.add_argument("--mirror", default=None)
    args = parser.parse_args(argv)
    data, workdir = frappe(args)
    args.processed = str(data.path)  # for the child processes
    print(
        f"K = {args.k}, batch {args.batch_size}, {args.threads} threads; per step, median of "
        f"{args.repeats} fresh processes ({args.steps} steps after {args.warmup})\n"
    )
    print("| model | malloc | minor faults | system ms | wall ms |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in args.models.split(","):
        runs = {s: [] for s in SETTINGS}
        for _ in range(args.repeats):
            for setting in SETTINGS:
                runs[setting].append(measure(name, args.k, setting, args))
        for setting, results in runs.items():
            cells = [statistics.median(r[key] for r in results) for key in results[0]]
            print(f"| {name} | {setting} | {cells[0]:,.0f} | {cells[1]:.2f} | {cells[2]:.2f} |")
    if workdir is not None:
        workdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

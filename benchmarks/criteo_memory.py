"""Peak memory of preprocessing a Criteo-scale LIBSVM file (issue 3's bounded-memory check).

    python benchmarks/criteo_memory.py --rows 2000000        # the measurement in RESULTS.md

Generates a LIBSVM file shaped like the Criteo release (39 features a line, field j at
position j, indices hashed into one 1..1,000,000 space, labels 0/1) plus a test file of an
eighth of its rows, in a temporary folder; builds the processed dataset in a child process
and reports the child's peak resident memory (``ru_maxrss``) against the size of the id
matrix, the input, and a child that only imports the library.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

N_FIELDS = 39
HASH_SPACE = 1_000_000
BLOCK_ROWS = 50_000


def generate_libsvm(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` lines of ``label idx:1 x 39``; field j draws from its own pool of hashed
    indices (pool sizes from 4 to 200,000, so some indices collide across fields)."""
    rng = np.random.default_rng(seed)
    pool_sizes = np.geomspace(4, 200_000, N_FIELDS).astype(int)
    pools = [
        np.char.add(rng.integers(1, HASH_SPACE + 1, size=n).astype("S7"), b":1") for n in pool_sizes
    ]
    with open(path, "wb") as f:
        for start in range(0, rows, BLOCK_ROWS):
            n = min(BLOCK_ROWS, rows - start)
            lines = (rng.random(n) < 0.25).astype(np.int8).astype("S1")
            for pool in pools:
                lines = np.char.add(np.char.add(lines, b" "), pool[rng.integers(0, len(pool), n)])
            f.write(b"\n".join(lines.tolist()) + b"\n")


def peak_rss_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec, whereas
    ``ru_maxrss`` keeps the forking parent's pages (it would count the generator's memory)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(mode: str, train: str, test: str, out: str) -> None:
    """Runs in a fresh interpreter; prints its own peak RSS (KiB on Linux) as JSON."""
    from aoaffm.data import build_dataset  # noqa: F401 (the import is the baseline's cost)

    started = time.perf_counter()
    meta = None
    if mode == "build":
        meta = build_dataset(
            "criteo", "libsvm", {"train": train, "test": test}, out, seed=0, progress=False
        )
    print(
        json.dumps(
            {
                "peak_rss_mib": peak_rss_mib(),
                "seconds": time.perf_counter() - started,
                "split_sizes": meta and meta["split_sizes"],
                "features": meta and meta["features"],
            }
        )
    )


def _run_child(mode: str, train: Path, test: Path, out: Path) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(train), str(test), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(rows: int, workdir: Path) -> dict:
    """Generate, build, and compare the build's peak RSS with the sizes that matter."""
    train, test, out = workdir / "train.svm", workdir / "test.svm", workdir / "processed"
    started = time.perf_counter()
    generate_libsvm(train, rows, seed=0)
    generate_libsvm(test, max(rows // 8, 1), seed=1)
    generated_s = time.perf_counter() - started
    baseline = _run_child("import", train, test, out)
    build = _run_child("build", train, test, out)
    total_rows = rows + max(rows // 8, 1)
    id_matrix_mib = total_rows * N_FIELDS * 4 / 2**20
    return {
        "rows": total_rows,
        "input_mib": (train.stat().st_size + test.stat().st_size) / 2**20,
        "id_matrix_mib": id_matrix_mib,
        "import_only_peak_rss_mib": baseline["peak_rss_mib"],
        "build_peak_rss_mib": build["peak_rss_mib"],
        "build_seconds": build["seconds"],
        "generate_seconds": generated_s,
        "split_sizes": build["split_sizes"],
        "features": build["features"],
        "target_mib": id_matrix_mib + 1024,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000_000])
    parser.add_argument("--workdir", default=None, help="default: a temporary folder")
    args = parser.parse_args()
    for rows in args.rows:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            result = measure(rows, Path(tmp))
        print(json.dumps(result, indent=2))
        print(
            f"{result['rows']:,} rows: peak RSS {result['build_peak_rss_mib']:.0f} MiB (import "
            f"alone {result['import_only_peak_rss_mib']:.0f} MiB) for a "
            f"{result['id_matrix_mib']:.0f} MiB id matrix from {result['input_mib']:.0f} MiB of "
            f"text in {result['build_seconds']:.0f} s; target < {result['target_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()

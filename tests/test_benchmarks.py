"""The benchmark scripts run and report what they promise (structure only: no timing is
asserted, the machine running the tests is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from aoaffm.config import load_config
from aoaffm.experiments import GROUPS, plan
from aoaffm.models import MODEL_NAMES


def run_script(repo_root, *args, timeout=300):
    return subprocess.run(
        [sys.executable, *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_gpu_check_documents_itself(repo_root):
    done = run_script(repo_root, "benchmarks/gpu_check.py", "--help")
    assert done.returncode == 0, done.stderr
    for option in ("--device", "--smoke", "--bf16", "--out", "--assumed-epochs"):
        assert option in done.stdout
    assert "Agreement" in done.stdout and "Projection" in done.stdout


def test_gpu_check_smoke_on_cpu(repo_root, tmp_path):
    out = tmp_path / "gpu_check.json"
    done = run_script(
        repo_root, "benchmarks/gpu_check.py", "--device", "cpu", "--smoke", "--out", str(out)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["device"] == "cpu"
    assert set(report["agreement"]) == set(MODEL_NAMES)
    assert all(r["ok"] and r["max_relative_error"] == 0.0 for r in report["agreement"].values())
    cfg = load_config(repo_root / "params.yaml", profile="paper")
    planned = [
        s
        for g in GROUPS
        for d in ("frappe", "movielens", "criteo")
        for s in plan(cfg, g, d, searched=False)
    ]
    assert {(c["dataset"], c["model"]) for c in report["throughput"]} == {
        (s.dataset, s.model) for s in planned
    }
    assert all(
        c["train_samples_per_s"] > 0 and c["eval_samples_per_s"] > 0 for c in report["throughput"]
    )
    projection = report["projection"]
    assert projection["runs"] == len(planned)
    assert projection["hours_at_cap"] > projection["hours_at_assumed_epochs"] > 0
    assert "the paper protocol" in done.stdout


def test_gpu_check_without_cuda_says_so(repo_root):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = run_script(repo_root, "benchmarks/gpu_check.py")
    assert done.returncode == 2 and "no CUDA device" in done.stderr


@pytest.mark.slow
def test_throughput_short_run(repo_root, mirror_dir, tmp_path):
    details = tmp_path / "details.json"
    done = run_script(
        repo_root,
        "benchmarks/throughput.py",
        "--models", "fm,ffm,afm,aoaffm",
        "--k", "8",
        "--attention-size", "8",
        "--steps", "3",
        "--windows", "2",
        "--warmup", "1",
        "--memory-steps", "1",
        "--bf16", "afm",
        "--bf16-steps", "4",
        "--threads", "1",
        "--mirror", str(mirror_dir),
        "--fuxictr-zoo", str(tmp_path / "no-model-zoo"),
        "--json",
        "--details", str(details),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # FuxiCTR cannot run (no model_zoo here, or not installed): left out, and said so
    assert "fuxictr left out: " in done.stderr
    rows = json.loads(done.stdout)
    assert [(r["model"], r["k"], r["peer_lib"]) for r in rows] == [
        ("fm", 8, "torchfm"), ("ffm", 8, "torchfm"), ("afm", 8, "torchfm"), ("aoaffm", 8, None)
    ]  # fmt: skip
    for row in rows:
        assert set(row) == {"model", "k", "ours", "peer", "ratio", "peer_lib"}
        assert row["ours"] > 0
        if row["model"] == "aoaffm":  # torchfm has none
            assert row["peer"] is None and row["ratio"] is None
        else:
            assert row["peer"] > 0
            assert row["ratio"] == pytest.approx(row["ours"] / row["peer"])
    assert "| model | K | ours (samples/s)" in done.stderr  # the Markdown table
    recorded = json.loads(details.read_text())
    assert recorded["context"]["train_rows"] == 202_026  # real Frappe, rebuilt from raw
    by_model = {r["model"]: r for r in recorded["results"]}
    assert by_model["ffm"]["floor"] == "memory traffic"
    assert by_model["ffm"]["floor_bytes"] > 0 and by_model["ffm"]["from_floor"] > 0
    for name in ("afm", "aoaffm"):
        assert by_model[name]["floor"] == "attention matmuls"
        assert by_model[name]["floor_step_ms"] > 0
    assert by_model["fm"]["ours_peak_mib"] >= 0 and by_model["fm"]["torchfm_peak_mib"] >= 0
    assert "torchfm_peak_mib" not in by_model["aoaffm"]
    assert "fuxictr" in recorded["context"]["peers_left_out"]
    (bf16,) = recorded["bf16"]  # the extra row: afm under bf16 autocast, RMSE effect
    assert bf16["model"] == "afm" and bf16["speedup"] > 0
    assert 0 < bf16["fp32_validation_rmse"] < 1.5 and 0 < bf16["bf16_validation_rmse"] < 1.5
    assert "bf16 autocast (samples/s)" in done.stderr


def test_rerun_published_documents_itself(repo_root):
    """Its run takes a quarter of an hour; here only that it imports and says what it does."""
    done = run_script(repo_root, "benchmarks/rerun_published.py", "--help")
    assert done.returncode == 0, done.stderr
    assert "--model" in done.stdout and "--bf16-products" in done.stdout
    assert "--patience" in done.stdout


def test_throughput_bf16_products_mode(repo_root, mirror_dir, tmp_path):
    """Only the attention's three products in bf16: the bf16 side trains other numbers
    (both sides are evaluated in float32, so the change is the training's)."""
    details = tmp_path / "details.json"
    done = run_script(
        repo_root,
        "benchmarks/throughput.py",
        "--models", "fm", "--peers", "torchfm", "--k", "8", "--attention-size", "8",
        "--steps", "2", "--windows", "2", "--warmup", "1", "--memory-steps", "0",
        "--bf16", "afm", "--bf16-mode", "products", "--bf16-steps", "8", "--threads", "1",
        "--mirror", str(mirror_dir), "--json", "--details", str(details),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    recorded = json.loads(details.read_text())
    assert recorded["context"]["bf16_mode"] == "products"
    (bf16,) = recorded["bf16"]
    assert bf16["speedup"] > 0 and 0 < bf16["bf16_validation_rmse"] < 1.5
    assert bf16["bf16_validation_rmse"] != bf16["fp32_validation_rmse"]
    assert "bf16 products (samples/s)" in done.stderr


@pytest.mark.slow
def test_throughput_fuxictr_peer(repo_root, mirror_dir):
    """Every model FuxiCTR has, against its own model and train_step (optional: needs
    ``pip install fuxictr==2.3.10`` and a checkout of its model_zoo in FUXICTR_MODEL_ZOO)."""
    pytest.importorskip("fuxictr", reason="FuxiCTR not installed (the `peers` extra)")
    zoo = os.environ.get("FUXICTR_MODEL_ZOO")
    if not zoo:
        pytest.skip("FUXICTR_MODEL_ZOO not set: FuxiCTR's models live in its GitHub model_zoo")
    done = run_script(
        repo_root,
        "benchmarks/throughput.py",
        "--models", "fm,ffm,hofm,wide_deep,deepcross,afm",
        "--peers", "fuxictr",
        "--k", "8",
        "--attention-size", "8",
        "--steps", "2",
        "--windows", "1",
        "--warmup", "1",
        "--memory-steps", "0",
        "--threads", "1",
        "--mirror", str(mirror_dir),
        "--fuxictr-zoo", zoo,
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout)
    assert [(r["model"], r["peer_lib"]) for r in rows] == [
        (m, "fuxictr") for m in ("fm", "ffm", "hofm", "wide_deep", "deepcross", "afm")
    ]
    for row in rows:
        assert row["peer"] > 0 and row["ratio"] == pytest.approx(row["ours"] / row["peer"])
    assert "| FuxiCTR (samples/s) |" in done.stderr


def test_ablation_short_run(repo_root, mirror_dir):
    done = run_script(
        repo_root,
        "benchmarks/ablation.py",
        "--models", "fm,aoaffm",
        "--dropout", "aoaffm=0.2",
        "--k", "8",
        "--attention-size", "8",
        "--steps", "1",
        "--windows", "1",
        "--warmup", "1",
        "--threads", "1",
        "--default-malloc",
        "--mirror", str(mirror_dir),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dropout {'aoaffm': 0.2}" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| fm", "| aoaffm"))]
    header = next(line for line in done.stdout.splitlines() if line.startswith("| model"))
    variants = [cell.strip() for cell in header.strip("|").split("|")[1:]]
    assert variants[0] == "autograd" and variants[-1] == "+fused steps"
    # one speed-up cell per variant in each model's row
    assert len(rows) == 2 and all(row.count("x)") == len(variants) for row in rows)


def test_page_faults_short_run(repo_root, mirror_dir):
    done = run_script(
        repo_root,
        "benchmarks/page_faults.py",
        "--models", "aoaffm",
        "--k", "8",
        "--attention-size", "8",
        "--steps", "2",
        "--warmup", "1",
        "--repeats", "1",
        "--threads", "1",
        "--mirror", str(mirror_dir),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| aoaffm")]
    assert [row.split("|")[2].strip() for row in rows] == ["trainer", "glibc default"]


def test_protocol_time_splits_epochs(repo_root, mirror_dir, tmp_path):
    """FM's two runs (pre-training, Table 3), one epoch of the real trainer each, split."""
    out = tmp_path / "protocol_time.json"
    done = run_script(
        repo_root,
        "benchmarks/protocol_time.py",
        "--models", "fm",
        "--epochs", "1",
        "--mirror", str(mirror_dir),
        "--json",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report == json.loads(out.read_text())
    assert [(r["group"], r["model"]) for r in report["runs"]] == [
        ("pretrain", "fm"),
        ("table3", "fm"),
    ]
    for run in report["runs"]:
        assert run["k"] == 256 and run["batch_size"] == 128 and run["epochs_timed"] == 1
        for epoch in run["epochs"]:
            assert all(epoch[phase] >= 0 for phase in ("train_s", "train_rmse_s", "validation_s"))
            assert epoch["checkpoint_s"] > 0  # history.json and checkpoint.pt were written
        mean = run["epoch"]
        assert run["overhead_ratio"] == pytest.approx(
            (mean["wall_s"] - mean["train_s"]) / mean["train_s"]
        )
        assert run["setup_s"] > 0 and run["end_s"] >= run["test_s"] > 0
    assert report["runs"][1]["dropout"] == 0.4  # Table 3's FM trains with the profile's dropout
    assert report["projections"] == {}  # FM alone cannot price the other models' runs
    assert "(eval + ckpt + rest) / train" in done.stderr
    fm = report["operator_counts"]["fm"]  # the reference FM, counted for the assumed GPU
    assert fm["train_step"]["operators"] > fm["eval_forward"]["operators"] > 0
    assert 0 < fm["host_s_per_operator"] < 1e-3


def test_operator_count_counts_kernels_not_views(repo_root, monkeypatch):
    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    import protocol_time as pt

    a, b = torch.ones(4, 3), torch.ones(3, 5)
    counted = pt._counted(lambda: (a @ b).t().reshape(-1).relu())
    assert counted["operators"] == 3  # mm, the reshape's copy, relu; t and the copy's view none
    assert counted["flops"] == 2 * 4 * 3 * 5
    assert counted["bytes"] == 3 * 20 * 4


def test_gpu_projection_bounds(repo_root, monkeypatch):
    """A step costs at least the larger, at most the sum, of host and device time."""
    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    import protocol_time as pt

    cfg = load_config(repo_root / "params.yaml", profile="frappe")
    spec = next(s for s in pt.table3_runs(cfg) if s.model == "fm")

    class Split:
        def __init__(self, n):
            self.labels = np.zeros(n)

    class Data:
        def split(self, name):
            return Split({"train": 128 * 100, "validation": 1000}[name])

    op = {"operators": 10, "flops": 0, "bytes": 0}
    counts = {"fm": {"train_step": op, "eval_forward": {**op, "rows": 256}}}
    counts["fm"]["host_s_per_operator"] = 5e-6
    gpu = pt.GpuAssumptions(launch_s=5e-6, kernel_s=3e-6, flops_per_s=1, bytes_per_s=1)
    result = pt.project_gpu_assumed([spec], counts, Data(), {}, 2, gpu)
    train_rmse = min(spec.train_rmse_rows or 12800, 12800)
    eval_batches = -(-(train_rmse + 1000) // spec.eval_batch_size)
    calls = 2 * (100 + eval_batches)  # 2 epochs ("assumed"): steps and evaluation batches
    assert result["hours_lower"] * 3600 == pytest.approx(calls * 10 * 10e-6)  # host-bound
    assert result["hours_upper"] * 3600 == pytest.approx(calls * 10 * 13e-6)


def test_protocol_time_projection(repo_root, monkeypatch):
    """Runs priced at setup + end + epochs x epoch time, epochs from the published runs."""
    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    import protocol_time as pt

    cfg = load_config(repo_root / "params.yaml", profile="frappe")
    keys = {pt.timing_key(s) for s in pt.profile_runs(cfg)}
    timed = {key: {"setup_s": 0.0, "end_s": 3.6, "epoch": {"wall_s": 36.0}} for key in keys}
    published = pt.published_epochs()
    assert published[("table3", "fm")] == [95] and len(published[("table2", "afm")]) == 2
    table3 = pt.table3_runs(cfg)
    assert sorted(s.group for s in table3).count("pretrain") == 2 and len(table3) == 10
    result = pt.project(table3, timed, published, assumed=30)
    epochs = sum(pt.epochs_of(s, published, 30)[0] for s in table3)
    assert result["epochs"] == pytest.approx(epochs)
    assert result["hours"] == pytest.approx((10 * 3.6 + epochs * 36.0) / 3600)
    profile = pt.profile_runs(cfg)
    planned = {s.run_id for g in GROUPS for s in plan(cfg, g, "frappe", searched=False)}
    assert len(profile) == len(planned)  # a sweep point that is a table run is trained once


def test_eval_chunks_short_run(repo_root):
    done = run_script(
        repo_root, "benchmarks/eval_chunks.py", "--rows", "600", "--repeats", "1",
        "--models", "afm,deepcross", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout)
    assert [r["model"] for r in rows] == ["afm", "deepcross"]
    assert all(r["same_bits"] and r["chunked_rows_per_s"] > 0 for r in rows)

"""Run-level parallelism (aoaffm.parallel): a group's runs on two local workers, or on a local
Ray of 2 CPUs, give exactly the numbers of one worker training them one after another."""

from __future__ import annotations

import copy
import json
import os
import shutil

import pytest
import torch
from test_identity import _params, _tiny
from test_train_units import SimulatedKill, kill_after, make_synthetic

from aoaffm import parallel
from aoaffm.cli import run_stage
from aoaffm.config import ConfigError, resolve
from aoaffm.data import load_processed
from aoaffm.experiments import build_model, plan, run_group, train_config
from aoaffm.models import load_model
from aoaffm.train import train_model

MODELS = ["fm", "wide_deep", "afm"]  # afm starts from the pretrain group's FM


def _untimed(record: dict) -> dict:
    """A metrics or history entry without its timings (wall_time_s, time_s, the per-phase
    validation_time_s, ...), the only keys that differ between two runs of the same bits."""
    return {k: v for k, v in record.items() if not k.endswith("time_s")}


def _group_params(**train) -> dict:
    params = _tiny(_params())
    params["quick"]["train"]["epochs"] = 2
    params["quick"]["table3"] = {"datasets": ["frappe"], "models": MODELS}
    params["train"].update(train)
    return params


def _kw(root) -> dict:
    return {"data_root": root / "data", "runs_root": root / "runs", "progress": False}


def _numbers(root, group: str = "table3") -> dict:
    """Every run's metrics, history (without times) and weights, by run id."""
    out = {}
    for run in sorted((root / "runs" / group / "frappe").iterdir()):
        metrics = json.loads((run / "metrics.json").read_text())
        history = json.loads((run / "history.json").read_text())
        out[run.name] = (
            _untimed(metrics),
            [_untimed(entry) for entry in history],
            load_model(run / "model.pt").state_dict(),
        )
    return out


def _assert_same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys() and len(got) >= len(MODELS)
    for run_id, (metrics, history, weights) in expected.items():
        assert got[run_id][0] == metrics, run_id  # floats compared exactly
        assert got[run_id][1] == history, run_id
        for name, tensor in weights.items():
            assert torch.equal(got[run_id][2][name], tensor), (run_id, name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Pretrain and table3 trained one after another in this process, on one thread."""
    root = tmp_path_factory.mktemp("sequential")
    make_synthetic(root / "data" / "frappe")
    cfg = resolve(_group_params(workers=1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_group(cfg, "pretrain", "frappe", **_kw(root))
        run_group(cfg, "table3", "frappe", **_kw(root))
    finally:
        torch.set_num_threads(threads)
    return root


def _copy_pretrained(reference, tmp_path):
    shutil.copytree(reference / "data", tmp_path / "data")
    shutil.copytree(reference / "runs" / "pretrain", tmp_path / "runs" / "pretrain")


@pytest.fixture
def two_threads():
    """Two workers then take one thread each, as the reference run on. (The thread count
    moves MKL's products in their last bits, so a run equals itself only on as many threads;
    the C++ kernels of FM and FFM give the same bits on any.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_two_workers_give_the_numbers_of_one(reference, tmp_path, two_threads):
    """Pretrain (FM, FFM) and table3 on two workers; AFM starts from the workers' FM."""
    shutil.copytree(reference / "data", tmp_path / "data")
    cfg = resolve(_group_params(workers=2))
    run_group(cfg, "pretrain", "frappe", **_kw(tmp_path))
    results = run_group(cfg, "table3", "frappe", **_kw(tmp_path))
    assert [spec.model for spec, _ in results] == [s.model for s in plan(cfg, "table3", "frappe")]
    _assert_same(_numbers(tmp_path, "pretrain"), _numbers(reference, "pretrain"))
    _assert_same(_numbers(tmp_path), _numbers(reference))


def test_an_interrupted_run_resumes_on_a_worker(reference, tmp_path, two_threads):
    _copy_pretrained(reference, tmp_path)
    cfg = resolve(_group_params(workers=2))
    spec = next(s for s in plan(cfg, "table3", "frappe") if s.model == "afm")
    data = load_processed(tmp_path / "data" / "frappe")
    torch.set_num_threads(1)  # as the reference (two_threads restores 2 for the workers)
    with pytest.raises(SimulatedKill):  # killed after its first epoch's checkpoint
        train_model(
            build_model(spec, data, tmp_path / "runs"),
            data,
            train_config(spec, cfg),
            spec.run_dir(tmp_path / "runs"),
            progress=False,
            on_epoch_end=kill_after(1),
        )
    assert (spec.run_dir(tmp_path / "runs") / "checkpoint.pt").is_file()
    torch.set_num_threads(2)
    run_group(cfg, "table3", "frappe", **_kw(tmp_path))
    _assert_same(_numbers(tmp_path), _numbers(reference))


def test_a_finished_twin_is_copied_not_trained(reference, tmp_path):
    """A run another group finished (same identity) is taken before any worker starts."""
    _copy_pretrained(reference, tmp_path)
    shutil.copytree(reference / "runs" / "table3", tmp_path / "runs" / "tune")
    results = run_group(resolve(_group_params(workers=2)), "table3", "frappe", **_kw(tmp_path))
    stored = {
        run.name: json.loads((run / "metrics.json").read_text())
        for run in (reference / "runs" / "table3" / "frappe").iterdir()
    }
    assert {spec.run_id: metrics for spec, metrics in results} == stored  # times too


def test_a_failing_run_is_one_line_naming_it_and_the_others_finish(reference, tmp_path):
    _copy_pretrained(reference, tmp_path)
    cfg = resolve(_group_params(workers=2))
    broken = next(s for s in plan(cfg, "table3", "frappe") if s.model == "wide_deep")
    broken.run_dir(tmp_path / "runs").mkdir(parents=True)
    (broken.run_dir(tmp_path / "runs") / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        run_stage(lambda: run_group(cfg, "table3", "frappe", **_kw(tmp_path)), "train")
    message = str(exit_info.value.code)
    assert message.startswith(f"train: table3/frappe {broken.run_id}: ")
    assert "checkpoint.pt" in message and "1 of 3 runs failed" in message
    assert "\n" not in message
    for spec in plan(cfg, "table3", "frappe"):
        finished = (spec.run_dir(tmp_path / "runs") / "metrics.json").is_file()
        assert finished == (spec != broken), spec.model


def _worker_facts() -> tuple:
    import time

    time.sleep(0.5)  # so that both workers take a task
    slot = parallel._worker["slot"]
    return slot.index, torch.get_num_threads(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_workers_share_the_threads_and_pin_their_gpu():
    assert [s.threads for s in parallel.plan_slots(2, 5)] == [3, 2]
    assert [s.threads for s in parallel.plan_slots(3, 2)] == [1, 1, 1]  # at least one each
    assert [s.gpu for s in parallel.plan_slots(3, 4, ["2", "5"])] == ["2", "5", "2"]
    slots = parallel.plan_slots(2, 3, ["7", "9"])
    tasks = [parallel.Task(f"t{i}", _worker_facts, ()) for i in range(4)]
    facts = parallel.run_local(tasks, slots, progress=False).values()
    for index, threads, gpu in facts:
        assert (threads, gpu) == (slots[index].threads, slots[index].gpu)
    assert {index for index, _, _ in facts} == {0, 1}


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"workers": "two"}, r"train.workers = 'two'; expected auto or an integer >= 1"),
        ({"workers": 0}, r"train.workers = 0; expected auto"),
        ({"backend": "dask"}, r"train.backend = 'dask'; expected one of \['local', 'ray'\]"),
        ({"gpus": 2, "workers": 2}, r"train.gpus = 2 trains each run on 2 processes"),
        ({"gpus": 2, "backend": "ray"}, r"train.gpus = 2 trains each run on 2 processes"),
    ],
)
def test_bad_worker_settings_are_one_line(train, message):
    with pytest.raises(ConfigError, match=message) as error:
        resolve(_group_params(**train))
    assert "\n" not in str(error.value)


def test_auto_is_one_worker_per_gpu_and_one_on_the_cpu():
    assert parallel.worker_count({"workers": "auto"}, []) == 1
    assert parallel.worker_count({"workers": "auto"}, ["0", "1", "2"]) == 3
    assert parallel.worker_count({"workers": 4}, []) == 4
    assert parallel.worker_count({"workers": "auto", "gpus": 4}, ["0", "1", "2", "3"]) == 1


def test_the_ray_backend_without_ray_is_one_line_before_training(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    make_synthetic(tmp_path / "data" / "frappe")
    with pytest.raises(ConfigError, match=r"Ray is not installed; pip install -e '.\[ray\]'"):
        run_group(resolve(_group_params(backend="ray")), "pretrain", "frappe", **_kw(tmp_path))
    assert not (tmp_path / "runs" / "pretrain" / "frappe").exists()


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip(
        "ray", reason="Ray is an optional extra (pip install -e '.[ray]'); CI installs .[test]"
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_with_2_cpus_gives_the_numbers_of_one_worker(reference, tmp_path, local_ray):
    _copy_pretrained(reference, tmp_path)
    cfg = resolve(_group_params(backend="ray"))
    broken = next(s for s in plan(cfg, "table3", "frappe") if s.model == "fm")
    broken.run_dir(tmp_path / "runs").mkdir(parents=True)
    (broken.run_dir(tmp_path / "runs") / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(parallel.RunFailed, match=rf"^table3/frappe {broken.run_id}: .*checkpoint"):
        run_group(cfg, "table3", "frappe", **_kw(tmp_path))  # the task's own error, one line
    shutil.rmtree(broken.run_dir(tmp_path / "runs"))
    run_group(copy.deepcopy(cfg), "table3", "frappe", **_kw(tmp_path))
    _assert_same(_numbers(tmp_path), _numbers(reference))
    assert local_ray.is_initialized()  # the caller's Ray is left running

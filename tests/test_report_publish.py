"""stages/publish.py's library half: a finished report and its runs, copied whole."""

from __future__ import annotations

import pytest
from conftest import REPO_ROOT
from test_report_build import ENVIRONMENT, synthetic_records

from aoaffm.config import load_config
from aoaffm.environment import environment
from aoaffm.io import read_json, write_json
from aoaffm.report import build_report
from aoaffm.report.publish import publish


@pytest.fixture
def finished(tmp_path):
    records = [r for r in synthetic_records(tmp_path) if r.get("run_dir")]
    for r in records:
        write_json(tmp_path / r["run_dir"] / "metrics.json", {"test_rmse": r["test_rmse"]})
        (tmp_path / r["run_dir"] / "model.pt").write_bytes(b"weights")  # must stay behind
    build_report(records, {}, tmp_path / "reports", profile="frappe", root=tmp_path)
    write_json(tmp_path / "reports" / "metrics.json", {})
    settings = {r["run_dir"]: {"seed": r["seed"], "model": r["model"]} for r in records}
    return tmp_path, records, settings


def _publish(root, records, settings):
    return publish(
        records,
        settings,
        reports_dir=root / "reports",
        environment=ENVIRONMENT,
        metas={"frappe": {"instances": 288_609}},
        out_dir=root / "published" / "frappe",
        root=root,
    )


def test_publishes_report_runs_settings_provenance_and_no_weights(finished):
    root, records, settings = finished
    out = _publish(root, records, settings)
    for name in ("REPORT.md", "claims.json", "params.md", "metrics.json", "environment.json"):
        assert (out / name).is_file(), name
    assert (out / "tables" / "table3.csv").is_file() and (out / "figures" / "figure4.png").is_file()
    assert read_json(out / "data" / "frappe.meta.json") == {"instances": 288_609}
    published = read_json(out / "runs.json")
    assert len(published) == len(records)
    for rec, original in zip(published, records, strict=True):
        run = out / rec["run_dir"]
        assert rec["history"] == f"{rec['run_dir']}/history.json"
        assert read_json(run / "history.json") == read_json(root / original["history"])
        assert read_json(run / "settings.json") == settings[original["run_dir"]]
        assert (run / "metrics.json").is_file()
    assert not list(out.rglob("*.pt"))


def test_an_unfinished_run_publishes_nothing(finished):
    root, records, settings = finished
    (root / records[-1]["run_dir"] / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="has not finished"):
        _publish(root, records, settings)
    assert not (root / "published" / "frappe").exists()


def test_environment_names_the_cpu_model_not_just_the_architecture():
    # the attention runs' last bits differ between CPUs (tests/test_fidelity.py), so the
    # published environment must say which CPU trained them; "x86_64" does not
    env = environment(load_config(REPO_ROOT / "params.yaml", profile="frappe"))
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        names = {line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")}
    assert env["cpu"] in names
    assert env["cpu_capability"] in {"NO AVX", "DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX"}

"""The download and preprocess stage scripts, run as DVC runs them (from the repo root)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import REPO_ROOT

from aoaffm.data import load_processed


@pytest.fixture
def quick_params(tmp_path):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["profile"] = "quick"  # Criteo from the 200-row Kaggle sample
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _stage(name, *args, env_mirror=None):
    env = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    if env_mirror:
        env["AOAFFM_MIRROR"] = str(env_mirror)
    return subprocess.run(
        [sys.executable, f"stages/{name}.py", *args, "--no-progress"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def test_download_then_preprocess_criteo_sample(mirror_dir, quick_params, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "processed"
    fetched = _stage("download", "criteo", "--params", str(quick_params), "--out", str(raw),
                     env_mirror=mirror_dir)  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    assert (raw / "criteo_sample.txt").is_file() and (raw / "sources.json").is_file()
    built = _stage("preprocess", "criteo", "--params", str(quick_params), "--raw", str(raw),
                   "--out", str(out))  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "criteo/kaggle-sample: 200 instances" in built.stdout
    ds = load_processed(out)
    assert ds.n_fields == 39 and ds.meta["seed"] == yaml.safe_load(quick_params.read_text())["seed"]
    assert ds.meta["sources"]["criteo_sample.txt"]["verified"] is True


def test_stage_errors_are_one_line(quick_params, tmp_path):
    unknown = _stage("preprocess", "frapp", "--params", str(quick_params))
    assert unknown.returncode == 2 and "invalid choice: 'frapp'" in unknown.stderr
    missing = _stage("preprocess", "criteo", "--params", str(quick_params), "--raw",
                     str(tmp_path / "nothing"), "--out", str(tmp_path / "out"))  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"preprocess: {tmp_path / 'nothing' / 'criteo_sample.txt'}: no such file "
        "(run the download stage first)"
    )
    assert not (tmp_path / "out").exists()

"""A user's problem ends every stage with one line on stderr and exit status 1, not a
traceback: the line names the file (and line), what was expected and what to do, and
nothing that looks complete is left behind.

Stages that train, and those whose failure needs a fault in the process (a full disk, a
read-only folder), run as processes from the repository root, as DVC runs them. The others
run in this process through the same entry point (``run_stage``), whose SystemExit carries
the line the process would print; any other exception would fail the test with the very
traceback a user would have seen.
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT
from data_fixtures import built, raw_files

from aoaffm.config import ConfigError, load_config
from aoaffm.data.readers import FRAPPE_COLUMNS, FRAPPE_MEMBER
from aoaffm.experiments import plan
from aoaffm.train.distributed import check_world

STAGES = REPO_ROOT / "stages"


@dataclass
class Ended:
    returncode: int
    stdout: str
    stderr: str


def run_process(stage: str, *args: str, cwd: Path = REPO_ROOT, fault: str = "", env=None):
    """``python stages/<stage>.py args`` as a process; ``fault`` is code run before it."""
    script = str(STAGES / f"{stage}.py")
    cmd = [sys.executable, script, *args]
    if fault:
        launcher = f"import runpy, sys\n{fault}\nrunpy.run_path({script!r}, run_name='__main__')"
        cmd = [sys.executable, "-c", launcher, *args]
    result = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        env=(env or os.environ) | {"PYTHONUNBUFFERED": "1"},
    )
    return Ended(result.returncode, result.stdout, result.stderr)


def run_in_process(monkeypatch, capsys, stage: str, *args: str) -> Ended:
    script = str(STAGES / f"{stage}.py")
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts the checkout first
    with pytest.raises(SystemExit) as ended:
        runpy.run_path(script, run_name="__main__")
    out, err = capsys.readouterr()
    code = ended.value.code
    if isinstance(code, str):  # what the interpreter prints on stderr, exiting with 1
        return Ended(1, out, err + code + "\n")
    return Ended(code or 0, out, err)


def one_line(ended: Ended, stage: str, *parts: str) -> str:
    """The stage failed with exactly one line on stderr that holds every one of ``parts``."""
    assert ended.returncode == 1, ended.stdout + ended.stderr
    assert "Traceback" not in ended.stderr, ended.stderr
    lines = ended.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{stage}: "), ended.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


# ---------------------------------------------------------------------------------------- fixtures


def quick_params(folder: Path, **quick_sections) -> Path:
    """params.yaml with the quick profile cut to table4 on the Criteo sample, on the CPU."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["profile"] = "quick"
    for section in ("model", "train", "data"):  # whatever a `dvc exp run -S` left
        params[section] = {k: None for k in params[section]}
    params["train"].update(device="cpu", bf16=False, gpus=1)
    quick = params["quick"]
    quick["train"] = {**quick.get("train", {}), "epochs": 2}
    for group in ("table2", "table3", "sweeps"):
        quick[group] = {**quick.get(group, {}), "datasets": []}
    quick["table4"] = {"datasets": ["criteo"], "models": ["fm"]}
    for name, value in quick_sections.items():
        quick[name] = value
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def project(mirror_dir, tmp_path) -> Path:
    """A working folder as the stages expect it: params.yaml and the processed Criteo sample."""
    shutil.copytree(
        built(mirror_dir, "criteo", "kaggle-sample"), tmp_path / "data" / "processed" / "criteo"
    )
    quick_params(tmp_path)
    return tmp_path


@pytest.fixture
def in_process(monkeypatch, capsys):
    return lambda stage, *args: run_in_process(monkeypatch, capsys, stage, *args)


def run_dir(project: Path, group: str = "table4") -> Path:
    (spec,) = plan(load_config(project / "params.yaml"), group, "criteo")
    return spec.run_dir(project / "runs")


def frappe_zip(path: Path, text: str) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(FRAPPE_MEMBER, text)
    return path


FRAPPE_HEADER = "\t".join(FRAPPE_COLUMNS) + "\n"


FRAPPE_ROW = "0\t1\t1\tmorning\tsunday\tweekend\tunknown\tfree\tsunny\tUnited States\t0\n"


def preprocess_frappe(tmp_path, **run) -> tuple[Ended, Path]:
    """The preprocess stage on ``tmp_path/raw/Mobile_Frappe.zip`` (the raw variant)."""
    quick = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["quick"]
    params = quick_params(
        tmp_path,
        data={**quick["data"], "frappe": {"source": "raw"}},  # the archive alone
        table3={"datasets": ["frappe"], "models": ["fm"]},  # a profile that uses Frappe
    )
    out = tmp_path / "processed" / "frappe"
    args = ("frappe", "--params", str(params), "--raw", str(tmp_path / "raw"), "--out", str(out))
    runner = run.pop("runner", None)
    if runner is not None:
        return runner("preprocess", *args, "--no-progress"), out
    return run_process("preprocess", *args, "--no-progress", **run), out


def nothing_left(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temporary either


# -------------------------------------------------------------------- data a model cannot train on


def test_frappe_log_with_only_its_header_is_no_dataset(tmp_path):
    (tmp_path / "raw").mkdir()
    frappe_zip(tmp_path / "raw" / "Mobile_Frappe.zip", FRAPPE_HEADER)
    ended, out = preprocess_frappe(tmp_path)
    one_line(ended, "preprocess", "Mobile_Frappe.zip: no data rows (0 instances)", "download")
    nothing_left(out)


# -------------------------------------------------------------------------------- malformed inputs


def test_byte_that_is_not_utf8_names_file_and_line(tmp_path, in_process):
    (tmp_path / "raw").mkdir()
    latin1_row = FRAPPE_ROW.replace("sunny", "sunny\xe9").encode("latin-1")  # é as one byte
    text = (FRAPPE_HEADER + FRAPPE_ROW * 5).encode() + latin1_row
    with zipfile.ZipFile(tmp_path / "raw" / "Mobile_Frappe.zip", "w") as z:
        z.writestr(FRAPPE_MEMBER, text)
    ended, out = preprocess_frappe(tmp_path, runner=in_process)
    one_line(
        ended,
        "preprocess",
        f"Mobile_Frappe.zip:{FRAPPE_MEMBER}, line 7: byte 0xe9 at column ",
        "is not UTF-8",
    )
    nothing_left(out)


def test_zip_member_failing_its_crc_check(tmp_path, in_process):
    (tmp_path / "raw").mkdir()
    path = tmp_path / "raw" / "Mobile_Frappe.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(FRAPPE_MEMBER, FRAPPE_HEADER + FRAPPE_ROW * 50)
    data = bytearray(path.read_bytes())
    data[data.index(b"morning") + 2] ^= 0x20  # one flipped bit in the stored member
    path.write_bytes(bytes(data))
    assert zipfile.is_zipfile(path)  # the archive itself is still well-formed
    ended, out = preprocess_frappe(tmp_path, runner=in_process)
    one_line(
        ended,
        "preprocess",
        f"Mobile_Frappe.zip:{FRAPPE_MEMBER}: damaged or incomplete zip archive (Bad CRC-32",
        "delete it and run the download stage again",
    )
    nothing_left(out)


def test_zip_cut_short_is_not_read_as_a_csv(mirror_dir, tmp_path, in_process):
    (tmp_path / "raw").mkdir()
    whole = (mirror_dir / "frappe" / "Mobile_Frappe.zip").read_bytes()
    (tmp_path / "raw" / "Mobile_Frappe.zip").write_bytes(whole[: len(whole) // 2])
    ended, out = preprocess_frappe(tmp_path, runner=in_process)
    line = one_line(
        ended,
        "preprocess",
        f"Mobile_Frappe.zip:{FRAPPE_MEMBER}: damaged or incomplete zip archive",
        "delete it and run the download stage again",
    )
    assert "header" not in line and "line 1" not in line
    nothing_left(out)


# -------------------------------------------------------------------------------------- parameters


def test_negative_seed_is_a_config_error(tmp_path, in_process):
    params = quick_params(tmp_path)
    params.write_text(params.read_text().replace("seed: 2019", "seed: -1"))
    ended = in_process("preprocess", "criteo", "--params", str(params))
    one_line(ended, "preprocess", f"{params}: seed = -1; expected an integer in [0, 2**32 - 1]")


def test_yaml_syntax_error_names_its_line(tmp_path, in_process):
    params = quick_params(tmp_path)
    lines = params.read_text().splitlines()
    bad = next(i for i, line in enumerate(lines) if line.startswith("  dropout:"))
    lines[bad] = "  dropout: [0.1"  # an unclosed list
    params.write_text("\n".join(lines) + "\n")
    ended = in_process("train", "table4", "criteo", "--params", str(params))
    one_line(ended, "train", f"{params}, line ", "not valid YAML (expected ',' or ']'")


def test_bad_parameter_in_the_train_stage(project, in_process, monkeypatch):
    monkeypatch.chdir(project)
    params = Path("params.yaml")
    params.write_text(params.read_text().replace("  epochs: null", "  epochs: 0"))
    ended = in_process("train", "table4", "criteo", "--no-progress")
    one_line(ended, "train", "params.yaml: train.epochs = 0; expected an integer >= 1")


# ----------------------------------------------------------- earlier outputs: missing or cut short


def test_checkpoint_cut_short(project):
    checkpoint = run_dir(project) / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"PK\x03\x04 cut short")
    ended = run_process("train", "table4", "criteo", "--no-progress", cwd=project)
    one_line(
        ended,
        "train",
        f"{checkpoint.relative_to(project)}: cannot read the training checkpoint",
        "delete it to start the run over",
    )
    assert not (checkpoint.parent / "metrics.json").exists()


def test_pretrained_model_cut_short_or_missing(project, in_process, monkeypatch):
    quick_params(project, table4={"datasets": ["criteo"], "models": ["afm"]})
    monkeypatch.chdir(project)
    (pretrain,) = plan(load_config("params.yaml"), "pretrain", "criteo")
    ended = in_process("train", "table4", "criteo", "--no-progress")
    model = pretrain.run_dir("runs") / "model.pt"
    one_line(ended, "train", f"pretrained model {model} is missing", "run the pretrain stage")

    model.parent.mkdir(parents=True)
    model.write_bytes(b"\x80\x02 not a whole model file")
    ended = in_process("train", "table4", "criteo", "--no-progress")
    one_line(ended, "train", f"{model}: cannot read the model file", "delete its run folder")
    assert not list(Path("runs/table4").rglob("metrics.json"))


def test_evaluate_with_an_unfinished_run(project, in_process, monkeypatch):
    monkeypatch.chdir(project)
    ended = in_process("evaluate")
    line = one_line(ended, "evaluate", "metrics.json: run ", "has not finished", "train.py table4")
    assert str(run_dir(Path("."))) in line
    assert not Path("results/runs.json").exists()


def test_report_without_the_evaluate_stage(project, in_process, monkeypatch):
    monkeypatch.chdir(project)
    ended = in_process("report")
    one_line(ended, "report", "results/runs.json: no such file; run the evaluate stage")
    assert not Path("reports").exists()


# ---------------------------------------------------------------------------------------- training


def test_diverged_training_after_dvclive_started_is_one_line(project):
    params = project / "params.yaml"
    params.write_text(
        params.read_text().replace("  learning_rate: null", "  learning_rate: 1.0e+30")
    )
    folder = run_dir(project)
    folder.mkdir(parents=True)
    stale = folder / ".checkpoint.pt.k1ll3d.tmp"  # what a write killed at an earlier start left
    stale.write_bytes(b"half a checkpoint")
    ended = run_process("train", "table4", "criteo", "--no-progress", cwd=project)
    one_line(
        ended,
        "train",
        f"{folder.relative_to(project)}: epoch 1: train_rmse is nan",
        "lower the learning rate",
    )
    assert (folder / "dvclive").is_dir()  # dvclive had started
    assert not stale.exists()
    assert not (folder / "metrics.json").exists() and not (folder / "model.pt").exists()


# ---------------------------------------------------------------------- writes the machine refuses


# Every file the stage opens for writing under FOLDER is /dev/full, where the kernel answers
# each write with "no space left on device": a full disk for the stage's own write path.
DISK_FULL = """
import io, os
folder, real_open = os.path.abspath(os.environ["FAULT_FOLDER"]) + os.sep, io.open
def fault_open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+"):
        if os.path.abspath(file).startswith(folder):
            return real_open("/dev/full", "wb" if "b" in mode else "w", *args, **kwargs)
    return real_open(file, mode, *args, **kwargs)
import builtins
builtins.open = io.open = fault_open
"""


def test_full_disk_during_preprocess(mirror_dir, tmp_path):
    raw = raw_files(mirror_dir, "criteo", "kaggle-sample")["train"].parent
    out = tmp_path / "processed" / "criteo"
    out.parent.mkdir()
    params = quick_params(tmp_path)
    ended = run_process(
        "preprocess", "criteo", "--params", str(params), "--raw", str(raw), "--out", str(out),
        "--no-progress", fault=DISK_FULL, env=os.environ | {"FAULT_FOLDER": str(out.parent)},
    )  # fmt: skip
    one_line(ended, "preprocess", f"{out}: no space left on the device", "free some space")
    nothing_left(out)


def test_full_disk_during_training(project):
    ended = run_process(
        "train", "table4", "criteo", "--no-progress", cwd=project, fault=DISK_FULL,
        env=os.environ | {"FAULT_FOLDER": str(project / "runs")},
    )  # fmt: skip
    checkpoint = run_dir(project) / "checkpoint.pt"
    one_line(ended, "train", f"{checkpoint.relative_to(project)}: no space left on the device")
    assert not checkpoint.exists() and not (checkpoint.parent / "metrics.json").exists()
    assert not [p for p in checkpoint.parent.iterdir() if p.name.endswith(".tmp")]


# As root, a folder of mode 0555 stays writable: refuse creating anything under FOLDER the
# way the kernel refuses everyone else (EACCES).
READ_ONLY = """
import errno, os
folder = os.path.abspath(os.environ["FAULT_FOLDER"]) + os.sep
def refuse(real, writes=lambda *a: True):
    def call(path, *args, **kwargs):
        if os.path.abspath(path).startswith(folder) and writes(*args):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real(path, *args, **kwargs)
    return call
os.mkdir = refuse(os.mkdir)
os.open = refuse(os.open, lambda flags, *a: flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
"""


def test_read_only_output_folder(mirror_dir, tmp_path):
    raw = raw_files(mirror_dir, "criteo", "kaggle-sample")["train"].parent
    folder = tmp_path / "processed"
    folder.mkdir()
    params = quick_params(tmp_path)
    folder.chmod(0o555)
    fault = READ_ONLY if os.access(folder, os.W_OK) else ""  # root: the kernel lets it write
    try:
        ended = run_process(
            "preprocess", "criteo", "--params", str(params), "--raw", str(raw),
            "--out", str(folder / "criteo"), "--no-progress", fault=fault,
            env=os.environ | {"FAULT_FOLDER": str(folder)},
        )  # fmt: skip
    finally:
        folder.chmod(0o755)
    one_line(ended, "preprocess", f"{folder}: permission denied", "make the folder writable")
    assert list(folder.iterdir()) == []


# ------------------------------------------------------------------------------- several processes


def test_gpus_beyond_the_machine_are_refused_cpu_processes_only_on_request(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"train.gpus = 2, but this machine has 0 CUDA dev"):
        check_world(2, "auto")
    with pytest.raises(ConfigError, match=r"train.device = 'cuda:1' names one GPU"):
        check_world(2, "cuda:1")
    assert "2 CPU processes" in check_world(2, "cpu")
    assert check_world(1, "auto") is None


def test_cpu_processes_start_without_torchrun_on_path(project):
    params = project / "params.yaml"
    text = params.read_text().replace("  gpus: 1", "  gpus: 2")
    params.write_text(text.replace("  learning_rate: null", "  learning_rate: 1.0e+30"))
    bare = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PATH": "/usr/bin:/bin"}
    ended = run_process("train", "table4", "criteo", "--no-progress", cwd=project, env=bare)
    assert ended.returncode == 1 and "Traceback" not in ended.stderr, ended.stderr
    assert "train.gpus = 2 with train.device = cpu: 2 CPU processes" in ended.stdout
    assert ": epoch 1: train_rmse is nan" in ended.stderr  # a rank's own line
    last = ended.stderr.strip().splitlines()[-1]
    assert last.startswith("train: training process ") and "of 2 failed" in last, last

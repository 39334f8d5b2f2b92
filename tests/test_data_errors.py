"""Bad input: one clear error naming file, line and expectation, and no output written.
Interrupted builds leave nothing that looks complete."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest

from aoaffm.data import DataError, build_dataset, load_processed
from aoaffm.data.readers import FRAPPE_MEMBER


def _lines(path, n):
    with open(path) as f:
        return [next(f) for _ in range(n)]


@pytest.fixture
def nfm_files(mirror_dir, tmp_path):
    """Small copies of NFM's validation file under the three split names; returns a writer
    that replaces one line of the validation file."""
    lines = _lines(mirror_dir / "frappe-nfm" / "frappe.validation.libfm", 30)
    paths = {s: tmp_path / f"frappe.{s}.libfm" for s in ("train", "validation", "test")}
    for path in paths.values():
        path.write_text("".join(lines))

    def with_line(number, text):
        changed = list(lines)
        changed[number - 1] = text + "\n"
        paths["validation"].write_text("".join(changed))
        return paths

    return with_line


def _fails(dataset, variant, paths, out, expected):
    with pytest.raises(DataError) as error:
        build_dataset(dataset, variant, paths, out, seed=0, progress=False)
    assert str(error.value) == expected
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temporary folder left either


def test_libfm_line_with_wrong_number_of_features(nfm_files, tmp_path):
    paths = nfm_files(17, "1 266:1 1244:1 5042:1 5049:1 5054:1 5055:1 5058:1 5062:1 5074:1")
    expected = "frappe.validation.libfm, line 17: expected 10 features 'id:value', found 9"
    _fails("frappe", "nfm", paths, tmp_path / "out", expected)


def test_libfm_non_numeric_id(nfm_files, tmp_path):
    paths = nfm_files(5, "1 266:1 abc:1 5042:1 5049:1 5054:1 5055:1 5058:1 5062:1 5074:1 5149:1")
    expected = (
        "frappe.validation.libfm, line 5: expected a non-negative integer feature id, "
        "found 'abc' in 'abc:1'"
    )
    _fails("frappe", "nfm", paths, tmp_path / "out", expected)


def test_libfm_token_without_value_and_bad_label(nfm_files, tmp_path):
    paths = nfm_files(3, "1 266:1 1244 5042:1 5049:1 5054:1 5055:1 5058:1 5062:1 5074:1 5149:1")
    expected = "frappe.validation.libfm, line 3: expected a feature 'id:value', found '1244'"
    _fails("frappe", "nfm", paths, tmp_path / "out", expected)
    paths = nfm_files(8, "0 266:1 1244:1 5042:1 5049:1 5054:1 5055:1 5058:1 5062:1 5074:1 5149:1")
    expected = "frappe.validation.libfm, line 8: expected a label in {-1, 1}, found 0"
    _fails("frappe", "nfm", paths, tmp_path / "out", expected)


@pytest.fixture
def frappe_zip(mirror_dir, tmp_path):
    """Writes a Mobile_Frappe.zip whose frappe.csv is the first 40 lines with one changed."""
    with zipfile.ZipFile(mirror_dir / "frappe" / "Mobile_Frappe.zip") as z:
        lines = z.read(FRAPPE_MEMBER).decode().splitlines(keepends=True)[:40]

    def with_line(number, transform):
        changed = list(lines)
        changed[number - 1] = transform(changed[number - 1].rstrip("\n")) + "\n"
        path = tmp_path / "Mobile_Frappe.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(FRAPPE_MEMBER, "".join(changed))
        return {"log": path}

    return with_line


def test_frappe_row_with_a_missing_field(frappe_zip, tmp_path):
    paths = frappe_zip(10, lambda line: line.rsplit("\t", 1)[0])  # city dropped
    expected = (
        f"Mobile_Frappe.zip:{FRAPPE_MEMBER}, line 10: expected 11 tab-separated columns, found 10"
    )
    _fails("frappe", "raw", paths, tmp_path / "out", expected)


def test_frappe_row_with_an_empty_field(frappe_zip, tmp_path):
    def blank_weather(line):
        cells = line.split("\t")
        cells[8] = ""
        return "\t".join(cells)

    paths = frappe_zip(12, blank_weather)
    expected = f"Mobile_Frappe.zip:{FRAPPE_MEMBER}, line 12: column 'weather' is empty"
    _fails("frappe", "raw", paths, tmp_path / "out", expected)


def test_frappe_non_numeric_user(frappe_zip, tmp_path):
    paths = frappe_zip(7, lambda line: "u7" + line[line.index("\t") :])
    expected = (
        f"Mobile_Frappe.zip:{FRAPPE_MEMBER}, line 7: column 'user': expected an integer, found 'u7'"
    )
    _fails("frappe", "raw", paths, tmp_path / "out", expected)


def test_movielens_line_with_a_missing_field(tmp_path):
    path = tmp_path / "ml-10m-tags.dat"
    path.write_text("1::10::funny::100\n1::20::dark::101\n2::10::102\n")
    expected = (
        "ml-10m-tags.dat, line 3: expected 4 '::'-separated columns (user, movie, tag, time), "
        "found 3"
    )
    _fails("movielens", "ml10m-tags", {"tags": path}, tmp_path / "out", expected)
    path.write_text("1::10::funny::100\nx::20::dark::101\n")
    expected = "ml-10m-tags.dat, line 2: userId: expected an integer, found 'x'"
    _fails("movielens", "ml10m-tags", {"tags": path}, tmp_path / "out", expected)


def test_criteo_kaggle_bad_rows(mirror_dir, tmp_path):
    lines = _lines(mirror_dir / "criteo" / "criteo_sample.txt", 30)
    path = tmp_path / "criteo_sample.txt"
    cells = lines[9].rstrip("\n").split(",")
    path.write_text("".join(lines[:9] + [",".join(cells[:-1]) + "\n"] + lines[10:]))
    expected = "criteo_sample.txt, line 10: expected 40 columns (label, I1..I13, C1..C26), found 39"
    _fails("criteo", "kaggle-sample", {"train": path}, tmp_path / "out", expected)
    cells[20] = "xyz"
    path.write_text("".join(lines[:9] + [",".join(cells) + "\n"] + lines[10:]))
    expected = (
        "criteo_sample.txt, line 10: C7: expected an 8-digit hex category or nothing, found 'xyz'"
    )
    _fails("criteo", "kaggle-sample", {"train": path}, tmp_path / "out", expected)
    cells[20] = "é"
    path.write_text("".join(lines[:9] + [",".join(cells) + "\n"] + lines[10:]))
    expected = (
        "criteo_sample.txt, line 10: C7: expected an 8-digit hex category or nothing, found 'é'"
    )
    _fails("criteo", "kaggle-sample", {"train": path}, tmp_path / "out", expected)


def test_criteo_libsvm_bad_lines(tmp_path):
    good = "1 " + " ".join(f"{j + 1}:1" for j in range(39)) + "\n"
    (tmp_path / "test.svm").write_text(good * 3)
    train = tmp_path / "train.svm"
    paths = {"train": train, "test": tmp_path / "test.svm"}
    train.write_text(good * 4 + good.replace(" 39:1", "") + good)
    expected = "train.svm, line 5: expected 39 features 'id:value', found 38"
    _fails("criteo", "libsvm", paths, tmp_path / "out", expected)
    train.write_text(good * 2 + "2" + good[1:])
    expected = "train.svm, line 3: expected a label in {-1, 0, 1}, found 2"
    _fails("criteo", "libsvm", paths, tmp_path / "out", expected)


def test_interrupted_build_keeps_the_previous_complete_folder(mirror_dir, tmp_path, monkeypatch):
    from data_fixtures import raw_files

    from aoaffm.data import build as build_module

    paths = raw_files(mirror_dir, "movielens", "ml10m-tags")
    out = tmp_path / "processed"
    build_dataset("movielens", "ml10m-tags", paths, out, seed=0, progress=False)
    before = load_processed(out).split("test").ids.copy()
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt  # e.g. Ctrl-C while the validation split is written
        return write_arrays(*args, **kwargs)

    write_arrays = build_module.write_arrays
    monkeypatch.setattr(build_module, "write_arrays", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_dataset("movielens", "ml10m-tags", paths, out, seed=1, progress=False)
    assert calls == ["train", "validation"]
    assert np.array_equal(load_processed(out).split("test").ids, before)  # old build intact
    assert [p.name for p in tmp_path.iterdir()] == ["processed"]  # no temporary folder left


KILLED_BUILD = """
import os, signal, sys
from aoaffm.data import build_dataset
from aoaffm.data import processed
real_write, calls = processed.NpyRows.write, []
def write(self, start, block):
    calls.append(1)
    if len(calls) == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # a hard kill mid-way through the ids
    real_write(self, start, block)
processed.NpyRows.write = write
build_dataset("criteo", "libsvm", {"train": sys.argv[1], "test": sys.argv[2]}, sys.argv[3],
              seed=0, progress=False, block_bytes=2048)
"""


def test_killed_criteo_build_leaves_nothing_that_looks_complete(tmp_path):
    line = "0 " + " ".join(f"{j + 1}:1" for j in range(39)) + "\n"
    (tmp_path / "train.svm").write_text(line * 200)
    (tmp_path / "test.svm").write_text(line * 20)
    out = tmp_path / "criteo"
    result = subprocess.run(
        [sys.executable, "-c", KILLED_BUILD, *(str(tmp_path / n) for n in ("train.svm", "test.svm")),
         str(out)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == -9, result.stderr
    assert not out.exists()
    leftovers = list(tmp_path.glob(".criteo.*.tmp"))  # hidden, named as temporary
    assert leftovers and not list(leftovers[0].glob("meta.json"))
    with pytest.raises(DataError, match="not a processed dataset"):
        load_processed(out)


def test_next_build_removes_what_a_killed_build_left(tmp_path):
    stale = tmp_path / ".out.abc123.tmp"
    (stale / "train_ids.npy").parent.mkdir(parents=True)
    (stale / "train_ids.npy").write_bytes(b"partial")
    path = tmp_path / "tags.dat"
    path.write_text("1::10::funny::100\n1::20::dark::101\n2::10::epic::102\n2::30::sad::103\n")
    build_dataset(
        "movielens", "ml10m-tags", {"tags": path}, tmp_path / "out", seed=0, progress=False
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tags.dat"]


# --------------------------------------------------------------------------- unusable builds


def test_build_that_cannot_train_is_an_error_naming_the_inputs(tmp_path):
    good = "1 " + " ".join(f"{j + 1}:1" for j in range(39)) + "\n"
    negative = "0" + good[1:]
    train, test = tmp_path / "train.svm", tmp_path / "test.svm"
    paths = {"train": train, "test": test}
    train.write_text(good * 8)
    test.write_text(good + negative)
    expected = (
        "train.svm, test.svm: the train split has no rows labelled 0; expected both labels, "
        "1 and 0 (a model trained on one label learns nothing): check that it is the right file"
    )
    _fails("criteo", "libsvm", paths, tmp_path / "out", expected)
    train.write_text((good + negative) * 4)
    test.write_text("")
    expected = (
        "train.svm, test.svm: 8 instances leave the test split empty; expected rows in every "
        "split: use more data, or other data.split fractions"
    )
    _fails("criteo", "libsvm", paths, tmp_path / "out", expected)


def test_field_without_values_is_an_error(tmp_path):
    from aoaffm.data.build import check_usable

    built = {"split_rows": dict.fromkeys(("train", "validation", "test"), 3),
             "field_names": ["user", "item"], "field_sizes": [4, 0]}  # fmt: skip
    with pytest.raises(DataError, match=r"^log.csv: field 'item' has no values; expected at"):
        check_usable(built, tmp_path, {"log": tmp_path / "log.csv"}, (-1.0, 1.0))


def test_too_little_data_to_sample_negatives_names_the_file(tmp_path):
    path = tmp_path / "tags.dat"
    path.write_text("1::10::funny::100\n")
    expected = (
        "tags.dat: user+movie 0 used 1 of the 1 tag values; cannot draw 2 unused ones as "
        "negatives (too little data to sample from?)"
    )
    _fails("movielens", "ml10m-tags", {"tags": path}, tmp_path / "out", expected)


# --------------------------------------------------------------------------- encodings, archives


def test_bytes_that_are_not_utf8(mirror_dir, tmp_path):
    path = tmp_path / "tags.dat"
    path.write_bytes(b"1::10::funny::100\n1::20::caf\xe9::101\n")
    expected = (
        "tags.dat, line 2: byte 0xe9 at column 11 is not UTF-8; expected UTF-8 text (re-save "
        "the file as UTF-8)"
    )
    _fails("movielens", "ml10m-tags", {"tags": path}, tmp_path / "out", expected)
    lines = _lines(mirror_dir / "criteo" / "criteo_sample.txt", 30)
    path = tmp_path / "criteo_sample.txt"
    cells = lines[9].split(",")
    cells[20] = "\udce9"  # one byte 0xe9 in C7 (surrogateescape writes it back raw)
    text = "".join(lines[:9] + [",".join(cells)] + lines[10:])
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    column = len(",".join(cells[:20])) + 2
    expected = (
        f"criteo_sample.txt, line 10: byte 0xe9 at column {column} is not UTF-8; expected UTF-8 "
        "text (re-save the file as UTF-8)"
    )
    _fails("criteo", "kaggle-sample", {"train": path}, tmp_path / "out", expected)


def test_archive_cut_short_in_a_mirror(tmp_path):
    import io
    import tarfile

    from aoaffm.data.sources import extract_member

    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tar:
        info = tarfile.TarInfo("data/train.txt")
        content = bytes(range(256)) * 4000
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    archive = tmp_path / "dac.tar.gz"
    archive.write_bytes(payload.getvalue()[: len(payload.getvalue()) // 2])
    with pytest.raises(DataError, match=r"^dac.tar.gz:data/train.txt: damaged or incomplete arc"):
        extract_member(archive, "data/train.txt", tmp_path / "train.txt")
    assert list(tmp_path.iterdir()) == [archive]

"""Readers for every input format, vectorized and chunked.

Each reader parses whole blocks of lines with numpy/pandas. When a block does not parse or
fails a check, a line-by-line Python pass finds the first bad line and raises a
:class:`DataError` naming the file, the line and what was expected; nothing is dropped.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .archives import is_zip, open_zip
from .errors import DataError, at_line, check_utf8, first_bad_line, text_lines

BLOCK_BYTES = 4 << 20  # text parsed at a time: ~12k Criteo lines, ~100 MB of working memory
COLON_TO_SPACE = bytes.maketrans(b":", b" ")
DIGITS = np.frombuffer(b"0123456789", dtype=np.uint8)
SPACES = np.frombuffer(b" \t\r\n", dtype=np.uint8)


# --------------------------------------------------------------------------- line blocks


def iter_line_blocks(
    path: str | os.PathLike,
    *,
    block_bytes: int = BLOCK_BYTES,
    progress: bool = False,
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(number of the block's first line, bytes of whole lines)`` through a file."""
    path = Path(path)
    line_no = 1
    rest = b""
    with (
        open(path, "rb") as f,
        tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            desc=f"reading {path.name}",
            disable=not progress,
        ) as bar,
    ):
        while chunk := f.read(block_bytes):
            bar.update(len(chunk))
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            block, rest = data[:cut], data[cut:]
            yield line_no, block
            line_no += block.count(b"\n")
    if rest:
        yield line_no, rest + b"\n"


def count_lines(path: str | os.PathLike, *, progress: bool = False) -> int:
    """Lines in a text file (a last line without a newline counts)."""
    return sum(block.count(b"\n") for _, block in iter_line_blocks(path, progress=progress))


def columns_per_line(block: bytes, separator: bytes) -> np.ndarray:
    """Number of ``separator``-separated columns on each line of a block of whole lines."""
    if len(separator) != 1:
        raise ValueError("single-byte separators only")
    data = np.frombuffer(block, dtype=np.uint8)
    separators = np.flatnonzero(data == separator[0])
    separators_before_end = np.searchsorted(separators, np.flatnonzero(data == ord("\n")))
    return np.diff(separators_before_end, prepend=0) + 1


def check_columns(path, block: bytes, first_line: int, separator: bytes, expected: int, what: str):
    """Every line of the block has ``expected`` columns, else a located error."""
    counts = columns_per_line(block, separator)
    bad = np.flatnonzero(counts != expected)
    if len(bad):
        line = first_line + int(bad[0])
        raise at_line(path, line, f"expected {expected} {what}, found {int(counts[bad[0]])}")


# --------------------------------------------------------------------------- libfm / LIBSVM


@dataclass
class LibfmBlock:
    first_line: int
    labels: np.ndarray  # float64 [n], as written
    ids: np.ndarray  # int64 [n, F], in the line's order
    values: np.ndarray  # float32 [n, F]


def _check_libfm_line(line: str, n_fields: int) -> str | None:
    tokens = line.split()
    if not tokens:
        return f"expected a label and {n_fields} features 'id:value', found an empty line"
    if not _finite(tokens[0]):
        return f"expected a numeric label, found {tokens[0]!r}"
    features = tokens[1:]
    if len(features) != n_fields:
        return f"expected {n_fields} features 'id:value', found {len(features)}"
    for token in features:
        index, sep, value = token.partition(":")
        if not sep or ":" in value:
            return f"expected a feature 'id:value', found {token!r}"
        if not re.fullmatch(r"\d+", index):
            return f"expected a non-negative integer feature id, found {index!r} in {token!r}"
        if not _finite(value):
            return f"expected a numeric feature value, found {value!r} in {token!r}"
    return None


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def parse_libfm_block(path, block: bytes, first_line: int, n_fields: int) -> LibfmBlock:
    """``<label> <id>:<value> x n_fields`` per line (libfm and LIBSVM are the same format)."""
    width = 1 + 2 * n_fields
    dtypes = {0: np.float64}
    dtypes.update({1 + 2 * j: np.int64 for j in range(n_fields)})
    dtypes.update({2 + 2 * j: np.float32 for j in range(n_fields)})
    n_lines = block.count(b"\n")
    try:
        frame = pd.read_csv(
            io.BytesIO(block.translate(COLON_TO_SPACE)),
            sep=r"\s+",
            header=None,
            names=range(width),
            dtype=dtypes,
            skip_blank_lines=False,
            engine="c",
        )
        if len(frame) != n_lines or frame.isna().to_numpy().any():
            raise ValueError("short or blank line")
        # a token like '1:2:3' or '1 2' shifts columns; ids must be non-negative integers
        if (frame[list(range(1, width, 2))].to_numpy() < 0).any():
            raise ValueError("negative id")
        data = np.frombuffer(block, dtype=np.uint8)
        colons = np.flatnonzero(data == ord(":"))
        if len(colons) != n_lines * n_fields or not (
            np.isin(data[colons - 1], DIGITS).all() and not np.isin(data[colons + 1], SPACES).any()
        ):
            raise ValueError("misplaced ':'")  # e.g. '5 :1' or '5: 1'
        if not np.isfinite(frame.to_numpy(dtype=np.float64)).all():
            raise ValueError("nan or inf")
    except (ValueError, pd.errors.ParserError) as error:
        raise first_bad_line(
            path, text_lines(block), first_line, lambda s: _check_libfm_line(s, n_fields), str(error)
        ) from None
    return LibfmBlock(
        first_line,
        frame[0].to_numpy(),
        frame[list(range(1, width, 2))].to_numpy(dtype=np.int64),
        frame[list(range(2, width, 2))].to_numpy(dtype=np.float32),
    )


def iter_libfm(
    path: str | os.PathLike,
    n_fields: int | None = None,
    *,
    block_bytes: int = BLOCK_BYTES,
    progress: bool = False,
) -> Iterator[LibfmBlock]:
    """Blocks of a libfm/LIBSVM file with exactly ``n_fields`` features a line (default: as
    many as the first line has)."""
    path = Path(path)
    for first_line, block in iter_line_blocks(path, block_bytes=block_bytes, progress=progress):
        if n_fields is None:
            head = block[: block.index(b"\n")].split()
            n_fields = len(head) - 1
            if n_fields < 1:
                raise at_line(path, first_line, "expected a label and features 'id:value'")
        yield parse_libfm_block(path, block, first_line, n_fields)


def read_libfm(
    path: str | os.PathLike, n_fields: int | None = None, *, progress: bool = False
) -> LibfmBlock:
    """A whole libfm file in memory (NFM's prepared splits)."""
    blocks = list(iter_libfm(path, n_fields, progress=progress))
    if not blocks:
        raise DataError(f"{Path(path).name}: empty file; expected libfm lines")
    return LibfmBlock(
        1,
        np.concatenate([b.labels for b in blocks]),
        np.concatenate([b.ids for b in blocks]),
        np.concatenate([b.values for b in blocks]),
    )


def map_labels(path, labels: np.ndarray, first_line: int, allowed: dict[float, float]):
    """Map raw labels to the dataset's scale (``allowed``: raw -> mapped); anything else is
    an error."""
    out = np.full(len(labels), np.nan, dtype=np.float32)
    for raw, mapped in allowed.items():
        out[labels == raw] = mapped
    bad = np.flatnonzero(np.isnan(out))
    if len(bad):
        shown = sorted(str(k).removesuffix(".0") for k in allowed)
        raise at_line(
            path,
            first_line + int(bad[0]),
            f"expected a label in {{{', '.join(shown)}}}, found {labels[bad[0]]:g}",
        )
    return out


# --------------------------------------------------------------------------- Frappe


FRAPPE_MEMBER = "Mobile_Frappe/frappe/frappe.csv"
FRAPPE_COLUMNS = (
    "user",
    "item",
    "cnt",
    "daytime",
    "weekday",
    "isweekend",
    "homework",
    "cost",
    "weather",
    "country",
    "city",
)
FRAPPE_FIELDS = tuple(c for c in FRAPPE_COLUMNS if c != "cnt")
FRAPPE_INTEGER_COLUMNS = ("user", "item", "cnt", "city")


def read_frappe_log(path: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """The Frappe log (``frappe.csv`` in ``Mobile_Frappe.zip``, or the csv itself).

    Returns the 10 fields (``cnt`` dropped) as strings, in file order, and the label used in
    messages. Every row must have all 11 tab-separated columns, non-empty.
    """
    path = Path(path)
    if is_zip(path):
        label = f"{path.name}:{FRAPPE_MEMBER}"
        with open_zip(path, label) as z:
            if FRAPPE_MEMBER not in z.namelist():
                raise DataError(
                    f"{path.name}: no member {FRAPPE_MEMBER}; is it the Frappe archive?"
                )
            data = z.read(FRAPPE_MEMBER)
    else:
        label, data = path.name, path.read_bytes()
    if not data.endswith(b"\n"):
        data += b"\n"
    check_utf8(label, data)
    header = data[: data.index(b"\n")].decode().rstrip("\r").split("\t")
    if tuple(header) != FRAPPE_COLUMNS:
        raise at_line(label, 1, f"expected the header {list(FRAPPE_COLUMNS)}, found {header}")
    check_columns(label, data, 1, b"\t", len(FRAPPE_COLUMNS), "tab-separated columns")
    frame = pd.read_csv(
        io.BytesIO(data), sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE
    )
    cells = frame.to_numpy(dtype=object)
    empty = np.argwhere(cells == "")
    if len(empty):
        row, col = empty[0]
        raise at_line(label, int(row) + 2, f"column {FRAPPE_COLUMNS[col]!r} is empty")
    for column in FRAPPE_INTEGER_COLUMNS:
        bad = np.flatnonzero(~frame[column].str.fullmatch(r"\d+").to_numpy(dtype=bool))
        if len(bad):
            value = frame[column].iloc[bad[0]]
            raise at_line(
                label, int(bad[0]) + 2, f"column {column!r}: expected an integer, found {value!r}"
            )
    return frame[list(FRAPPE_FIELDS)], label


# --------------------------------------------------------------------------- MovieLens


MOVIELENS_CSV_HEADER = ["userId", "movieId", "tag", "timestamp"]


def read_movielens_tags(path: str | os.PathLike) -> pd.DataFrame:
    """Tag applications as (user, movie, tag) in file order.

    Two formats: MovieLens 10M's ``UserID::MovieID::Tag::Timestamp`` and the newer
    ``tags.csv`` (header ``userId,movieId,tag,timestamp``, tags quoted where needed). Tags are
    kept verbatim (case and spacing are the user's).
    """
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise DataError(f"{path.name}: empty file; expected MovieLens tag lines")
    if not data.endswith(b"\n"):
        data += b"\n"
    check_utf8(path, data)
    first = data[: data.index(b"\n")].decode().strip()
    if first.split(",") == MOVIELENS_CSV_HEADER:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        first_line = 2
    else:
        data = data.replace(b"::", b"\t")
        check_columns(path, data, 1, b"\t", 4, "'::'-separated columns (user, movie, tag, time)")
        frame = pd.read_csv(
            io.BytesIO(data),
            sep="\t",
            header=None,
            names=MOVIELENS_CSV_HEADER,
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE,
        )
        first_line = 1
    for column in ("userId", "movieId", "timestamp"):
        bad = np.flatnonzero(~frame[column].str.fullmatch(r"\d+").to_numpy(dtype=bool))
        if len(bad):
            raise at_line(
                path,
                first_line + int(bad[0]),
                f"{column}: expected an integer, found {frame[column].iloc[bad[0]]!r}",
            )
    empty = np.flatnonzero((frame["tag"] == "").to_numpy())
    if len(empty):
        raise at_line(path, first_line + int(empty[0]), "expected a tag, found an empty one")
    return pd.DataFrame(
        {
            "user": frame["userId"].astype(np.int64),
            "movie": frame["movieId"].astype(np.int64),
            "tag": frame["tag"],
        }
    )


# --------------------------------------------------------------------------- Kaggle Criteo


CRITEO_INT_FIELDS = tuple(f"I{j}" for j in range(1, 14))
CRITEO_CAT_FIELDS = tuple(f"C{j}" for j in range(1, 27))
CRITEO_FIELDS = CRITEO_INT_FIELDS + CRITEO_CAT_FIELDS
CRITEO_HEADER = ("label", *CRITEO_FIELDS)
_HEX_DIGITS = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_DIGITS[_c] = _i
    _HEX_DIGITS[ord(chr(_c).upper())] = _i


@dataclass
class KaggleBlock:
    first_line: int
    labels: np.ndarray  # int8 [n], 0 / 1
    integers: np.ndarray  # float64 [n, 13], NaN where missing
    categories: np.ndarray  # int64 [n, 26], the 32-bit hashes; -1 where missing


def hex_categories(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-hex-digit category strings -> int64 (vectorized); also the mask of malformed ones.
    Missing values ('' or NaN) become -1."""
    strings = pd.Series(column, dtype=object).fillna("").to_numpy(dtype="S9")
    raw = strings.view(np.uint8).reshape(len(strings), 9)
    missing = raw[:, 0] == 0
    digits = _HEX_DIGITS[raw[:, :8]]
    well_formed = (digits != 255).all(axis=1) & (raw[:, 8] == 0)
    weights = (16 ** np.arange(7, -1, -1)).astype(np.int64)
    values = (digits.astype(np.int64) * weights).sum(axis=1)
    values[missing] = -1
    return values, ~(well_formed | missing)


def _check_kaggle_line(line: str, separator: str) -> str | None:
    cells = line.split(separator)
    if len(cells) != len(CRITEO_HEADER):
        return (
            f"expected {len(CRITEO_HEADER)} columns (label, I1..I13, C1..C26), found {len(cells)}"
        )
    if cells[0] not in ("0", "1"):
        return f"expected a label 0 or 1, found {cells[0]!r}"
    for name, cell in zip(CRITEO_INT_FIELDS, cells[1:14], strict=True):
        if cell:
            try:
                float(cell)
            except ValueError:
                return f"{name}: expected an integer or nothing, found {cell!r}"
    for name, cell in zip(CRITEO_CAT_FIELDS, cells[14:], strict=True):
        if cell and not re.fullmatch(r"[0-9a-fA-F]{8}", cell):
            return f"{name}: expected an 8-digit hex category or nothing, found {cell!r}"
    return None


def iter_criteo_kaggle(
    path: str | os.PathLike, *, block_bytes: int = BLOCK_BYTES, progress: bool = False
) -> Iterator[KaggleBlock]:
    """Raw Kaggle Criteo in blocks: ``train.txt`` (tab-separated, no header) or the CSV
    sample with the header ``label,I1..I13,C1..C26``."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    has_header = head.startswith("label")
    separator = "," if has_header else "\t"
    if has_header and tuple(head.split(",")) != CRITEO_HEADER:
        raise at_line(path, 1, f"expected the header label,I1..I13,C1..C26, found {head!r}")
    for first_line, block in iter_line_blocks(path, block_bytes=block_bytes, progress=progress):
        if has_header and first_line == 1:
            block = block[block.index(b"\n") + 1 :]
            first_line = 2
            if not block:
                continue
        yield _parse_kaggle_block(path, block, first_line, separator)


def _parse_kaggle_block(path, block: bytes, first_line: int, separator: str) -> KaggleBlock:
    def bad_line(message: str) -> DataError:
        return first_bad_line(
            path, text_lines(block), first_line, lambda s: _check_kaggle_line(s, separator), message
        )

    counts = columns_per_line(block, separator.encode())
    if (counts != len(CRITEO_HEADER)).any():
        raise bad_line("wrong number of columns")
    try:
        frame = pd.read_csv(
            io.BytesIO(block),
            sep=separator,
            header=None,
            names=CRITEO_HEADER,
            dtype={"label": str, **dict.fromkeys(CRITEO_INT_FIELDS, np.float64)},
            keep_default_na=False,
            na_values={name: [""] for name in CRITEO_HEADER},
            skip_blank_lines=False,
            quoting=csv.QUOTE_NONE,
            engine="c",
        )
    except (ValueError, pd.errors.ParserError) as error:
        raise bad_line(str(error)) from None
    labels = frame["label"].to_numpy(dtype=object)
    if not np.isin(labels, ["0", "1"]).all():
        raise bad_line("label not 0 or 1")
    categories = np.empty((len(frame), len(CRITEO_CAT_FIELDS)), dtype=np.int64)
    for j, name in enumerate(CRITEO_CAT_FIELDS):
        try:
            categories[:, j], malformed = hex_categories(frame[name].to_numpy(dtype=object))
        except ValueError:  # e.g. a non-ASCII cell
            malformed = np.array([True])
        if malformed.any():
            raise bad_line(f"{name}: malformed category")
    return KaggleBlock(
        first_line,
        (labels == "1").astype(np.int8),
        frame[list(CRITEO_INT_FIELDS)].to_numpy(dtype=np.float64),
        categories,
    )

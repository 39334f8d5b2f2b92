"""Run records (``results/runs.json``): validation, seed statistics and table cells.

A record is one finished training run (see the run-record contract in DESIGN notes); the
report aggregates the records of one (group, dataset, model) over seeds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import UnreadableFile
from ..io import read_json
from ..mechanism import PAIR_CLASSES
from ..models import canonical_name as canonical_model  # the registry owns the alias
from .paper import TABLE2, TABLE3, TABLE3_FROM_TABLE2, TABLE4

GROUPS = (
    "table2",
    "table3",
    "table4",
    "sweep_embedding_size",
    "sweep_dropout",
    "sweep_lambda",
    "pretrain",
    "tune",
    "random_start",
    "redundancy_pretrain",
    "redundancy",
)
# Which group and metric each paper table reads.
TABLE_METRIC = {"table2": "validation_rmse", "table3": "test_rmse", "table4": "test_rmse"}


RECORD_FIELDS = (
    "group",
    "dataset",
    "model",
    "seed",
    "embedding_size",
    "attention_size",
    "dropout",
    "lambda",
    "learning_rate",
    "batch_size",
    "pretrained_from",
    "sweep_param",
    "sweep_value",
    "validation_rmse",
    "test_rmse",
    "train_rmse",
    "best_epoch",
    "epochs",
    "params",
    "wall_time_s",
    "device",
    "run_dir",
    "history",
    # the planted-redundancy runs: the variant, and P·α and q per pair class (aoaffm.mechanism)
    "redundancy_kind",
    "redundancy_r",
    *(f"{w}_{c}" for w in ("alpha", "q") for c in PAIR_CLASSES),
)


REQUIRED_FIELDS = ("group", "dataset", "model", "seed", "validation_rmse", "test_rmse")
NON_NUMERIC_FIELDS = (
    "group",
    "dataset",
    "model",
    "pretrained_from",
    "sweep_param",
    "device",
    "run_dir",
    "history",
    "redundancy_kind",
)
# seed and sweep_value are checked apart: seed may be any label, sweep_value only in sweeps
NUMERIC_FIELDS = tuple(
    f for f in RECORD_FIELDS if f not in (*NON_NUMERIC_FIELDS, "seed", "sweep_value")
)


def make_record(group: str, dataset: str, model: str, **fields) -> dict:
    """A run record with every contract field (None where not given); sweeps fill
    ``sweep_param`` from the group."""
    unknown = set(fields) - set(RECORD_FIELDS)
    if unknown:
        raise ValueError(f"unknown run-record field(s) {sorted(unknown)}; expected {RECORD_FIELDS}")
    record = dict.fromkeys(RECORD_FIELDS)
    record.update(group=group, dataset=dataset, model=model, seed=0)
    if group.startswith("sweep_"):
        record["sweep_param"] = group.removeprefix("sweep_")
    record.update(fields)
    return record


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_records(records: Iterable[dict], source: str = "run records") -> list[dict]:
    """Check the fields the report reads; return copies with canonical model/dataset names.

    A bad record raises UnreadableFile (a ValueError) naming the source, the record's position and run_dir,
    and what was expected.
    """
    if isinstance(records, dict) or not isinstance(records, Iterable):
        raise UnreadableFile(f"{source}: expected a JSON list of run records, got {type(records)}")
    checked = []
    for index, record in enumerate(records):
        where = f"{source}: record {index}"
        if not isinstance(record, dict):
            raise UnreadableFile(f"{where}: expected an object, got {type(record).__name__}")
        if record.get("run_dir"):
            where += f" (run_dir {record['run_dir']})"
        missing = [k for k in REQUIRED_FIELDS if k not in record]
        if missing:
            raise UnreadableFile(f"{where}: missing field(s) {missing}")
        if record["group"] not in GROUPS:
            raise UnreadableFile(f"{where}: unknown group {record['group']!r}; expected {GROUPS}")
        for key in NUMERIC_FIELDS:
            value = record.get(key)
            if value is not None and not _is_number(value):
                raise UnreadableFile(
                    f"{where}: field {key!r} must be a number or null, got {value!r}"
                )
        if record["group"].startswith("sweep_") and not _is_number(record.get("sweep_value")):
            raise UnreadableFile(
                f"{where}: a {record['group']} record needs a numeric sweep_value, "
                f"got {record.get('sweep_value')!r}"
            )
        checked.append(
            {
                **record,
                "model": canonical_model(record["model"]),
                "dataset": str(record["dataset"]).lower(),
            }
        )
    return checked


def read_records(path: str | os.PathLike) -> list[dict]:
    """Load and validate ``results/runs.json``."""
    return validate_records(read_json(path, "a list of run records"), str(path))


@dataclass(frozen=True)
class Stat:
    """A metric over seeds: mean, sample standard deviation (ddof=1; NaN for one run), n."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat | None:
        values = [float(v) for v in values if v is not None]
        if not values:
            return None
        n = len(values)
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
        return cls(mean, std, n)

    @property
    def has_spread(self) -> bool:
        return self.n > 1 and math.isfinite(self.std)

    def format(self, digits: int = 4) -> str:
        if not math.isfinite(self.mean):
            return f"{self.mean} (n={self.n})"
        if self.has_spread:
            return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} (n={self.n})"
        return f"{self.mean:.{digits}f} (n={self.n})"


def select(records: Iterable[dict], group: str, dataset: str, model: str) -> list[dict]:
    return [
        r
        for r in records
        if r["group"] == group and r["dataset"] == dataset and r["model"] == model
    ]


@dataclass(frozen=True)
class Cell:
    """The reproduced value of one paper table cell and the runs it came from."""

    stat: Stat
    group: str
    records: tuple


def table_cell(records: list[dict], table: str, dataset: str, model: str) -> Cell | None:
    """The reproduced RMSE of a cell of Table 2, 3 or 4 (None when no run has it).

    Table 2 is the table2 group's validation RMSE; Table 3's AFM, AoAFM and AoAFFM cells are
    the table2 group's test RMSE (mean over the seeds), falling back to table3 runs of those
    models if there are no table2 runs; every other Table 3/4 cell is its own group's test RMSE.
    """
    metric = TABLE_METRIC[table]
    groups = [table]
    if table == "table3" and model in TABLE3_FROM_TABLE2:
        groups = ["table2", "table3"]
    for group in groups:
        runs = [r for r in select(records, group, dataset, model) if r.get(metric) is not None]
        if runs:
            return Cell(Stat.of(r[metric] for r in runs), group, tuple(runs))
    return None


def sweep_stats(records: list[dict], group: str, dataset: str, model: str) -> dict[float, Stat]:
    """Validation RMSE per swept value (mean over seeds), sorted by value."""
    by_value: dict[float, list[float]] = {}
    for r in select(records, group, dataset, model):
        if r.get("validation_rmse") is not None:
            by_value.setdefault(float(r["sweep_value"]), []).append(r["validation_rmse"])
    return {v: Stat.of(by_value[v]) for v in sorted(by_value)}


def distinct(records: Iterable[dict], key: str) -> str:
    """The distinct values of a field across runs, for the tables' settings columns."""
    values = list(dict.fromkeys(r.get(key) for r in records if r.get(key) is not None))
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def paper_as_records(seed: int = 0) -> list[dict]:
    """The paper's Tables 2-4 written as run records (one run per cell, no sweeps).

    Evaluating the claims on these records checks that each claim is encoded the way the
    paper's own numbers support it; tests build synthetic reproductions from them.
    """
    table3 = {(r.dataset, r.model): r for r in TABLE3}
    batch = {"movielens": 4096, "frappe": 128}
    records = []
    for r in TABLE2:
        t3 = table3.get((r.dataset, r.model))
        records.append(
            make_record(
                "table2",
                r.dataset,
                r.model,
                seed=seed,
                embedding_size=r.embedding_size,
                dropout=r.dropout,
                batch_size=batch[r.dataset],
                validation_rmse=r.validation_rmse,
                test_rmse=t3.test_rmse if t3 else None,
                params=round(t3.params) if t3 else None,
                **{"lambda": r.lam},
            )
        )
    for r in TABLE3:
        if r.model not in TABLE3_FROM_TABLE2:
            records.append(
                make_record(
                    "table3",
                    r.dataset,
                    r.model,
                    seed=seed,
                    embedding_size=256,
                    batch_size=batch[r.dataset],
                    test_rmse=r.test_rmse,
                    params=round(r.params),
                )
            )
    for r in TABLE4:
        records.append(
            make_record(
                "table4",
                r.dataset,
                r.model,
                seed=seed,
                embedding_size=r.embedding_size,
                batch_size=r.batch_size,
                test_rmse=r.test_rmse,
            )
        )
    return records

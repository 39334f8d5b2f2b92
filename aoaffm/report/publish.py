"""Published results: one profile's reproduction, complete and self-contained, in a folder a
reader opens without running anything (``reports/published/<profile>/``, DESIGN §6).

It holds REPORT.md with its tables (Markdown and CSV), figures, claims and metrics; the run
records (``runs.json``) with every run's history, metrics and settings under ``runs/``;
the environment and the data provenance (each dataset's ``meta.json``). No weights, no arrays.
History paths in ``runs.json`` are relative to the folder, so the report can be rebuilt from
it alone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from aoaffm.io import atomic_dir, write_json

from .records import validate_records

REPORT_FILES = ("REPORT.md", "claims.json", "params.md", "metrics.json")
REPORT_FOLDERS = ("tables", "figures")
RUN_FILES = ("history.json", "metrics.json")


def publish(
    records: list[dict],
    settings: Mapping[str, dict],
    *,
    reports_dir: str | os.PathLike,
    environment: Mapping,
    metas: Mapping[str, Mapping],
    out_dir: str | os.PathLike,
    root: str | os.PathLike = ".",
) -> Path:
    """Write ``out_dir`` whole (atomically) from a finished report and its runs.

    ``records`` are the run records (results/runs.json), ``settings`` each run's settings by
    its ``run_dir`` (the run's identity), ``reports_dir`` the generated report, ``root`` the
    folder the records' paths start from. A run without its history or metrics is an error:
    a published reproduction is complete or not written.
    """
    records = validate_records(records)
    reports_dir, root, out_dir = Path(reports_dir), Path(root), Path(out_dir)
    for name in REPORT_FILES:
        if not (reports_dir / name).is_file():
            raise FileNotFoundError(f"{reports_dir / name}: missing; run the report stage first")
    with atomic_dir(out_dir) as tmp:
        for name in REPORT_FILES:
            shutil.copy2(reports_dir / name, tmp / name)
        for name in REPORT_FOLDERS:
            shutil.copytree(reports_dir / name, tmp / name)
        published = []
        for record in records:
            run_dir = Path(record["run_dir"])
            target = Path("runs") / run_dir.relative_to(run_dir.parents[2])  # group/dataset/id
            for name in RUN_FILES:
                source = root / run_dir / name
                if not source.is_file():
                    raise FileNotFoundError(f"{source}: missing; the run has not finished")
                (tmp / target).mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, tmp / target / name)
            if record["run_dir"] not in settings:
                raise KeyError(f"{record['run_dir']}: no settings given for this run")
            write_json(tmp / target / "settings.json", settings[record["run_dir"]])
            published.append(
                {**record, "run_dir": str(target), "history": str(target / "history.json")}
            )
        write_json(tmp / "runs.json", published)
        write_json(tmp / "environment.json", dict(environment))
        for dataset, meta in metas.items():
            write_json(tmp / "data" / f"{dataset}.meta.json", dict(meta))
    return out_dir

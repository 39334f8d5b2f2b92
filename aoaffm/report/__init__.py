"""The report: the paper's published numbers, Tables 1-4, Figures 3-4 and the claims checklist.

Entry points: :func:`build_report` writes everything under ``reports/``;
:func:`metrics_summary` gives the small metrics file for ``dvc metrics show``.
"""

from .claims import evaluate_claims
from .document import build_report, metrics_summary, read_metas
from .records import read_records, table_cell, validate_records

__all__ = [
    "build_report",
    "evaluate_claims",
    "metrics_summary",
    "read_metas",
    "read_records",
    "table_cell",
    "validate_records",
]

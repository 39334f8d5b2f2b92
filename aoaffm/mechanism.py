"""The paper's mechanism, read off a trained attention model: which field pairs the
feature-level attention α and the interaction-level weights q favour.

The planted-redundancy experiment (``aoaffm.data.redundancy``) adds copies of a source field
f. Its field pairs then fall into classes that this module names and averages over:

- ``original``: (f, g), the source field with an original field g;
- ``planted``: (c, g), a planted copy c of f with the same fields g;
- ``other``: (g, h), two original fields, neither a source;
- ``duplicate``: (f, c) or (c, c'), a field with its own copy (no counterpart at r = 0).

α sums to one over the P pairs of a row, and P grows with r, so α is reported as P·α: 1 is a
uniform share, 2 twice the uniform share. q is the model's learned scalar per pair (1 for the
models without Q).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

PLANTED_MARK = "~"  # aoaffm.data.redundancy names a planted field "<source>~<kind><k>"
PAIR_CLASSES = ("original", "planted", "other", "duplicate")


def source_of(field: str) -> str:
    """The field a planted field was derived from (an original field: itself)."""
    return field.split(PLANTED_MARK, 1)[0]


def pair_class(a: str, b: str, sources: Iterable[str]) -> str:
    """The class of the field pair (a, b) given the planted-from ``sources``."""
    planted = [PLANTED_MARK in name for name in (a, b)]
    if any(planted):  # a copy with its own source, or two copies: no r = 0 counterpart
        return "duplicate" if all(planted) or source_of(a) == source_of(b) else "planted"
    return "original" if {a, b} & set(sources) else "other"


def summarize(
    field_names: Sequence[str],
    left: Sequence[int],
    right: Sequence[int],
    alpha: Sequence[float],
    q: Sequence[float] | None,
    sources: Iterable[str],
) -> dict[str, float | None]:
    """Mean P·α and mean q per pair class: ``alpha_<class>`` and ``q_<class>`` (None where
    no pair has the class; q is 1 for models without Q)."""
    sources = list(sources)
    alpha = np.asarray(alpha, dtype=np.float64) * len(alpha)
    q = np.ones_like(alpha) if q is None else np.asarray(q, dtype=np.float64)
    classes = np.array(
        [
            pair_class(field_names[a], field_names[b], sources)
            for a, b in zip(left, right, strict=True)
        ]
    )
    out: dict[str, float | None] = {}
    for name in PAIR_CLASSES:
        chosen = classes == name
        out[f"alpha_{name}"] = float(alpha[chosen].mean()) if chosen.any() else None
        out[f"q_{name}"] = float(q[chosen].mean()) if chosen.any() else None
    return out

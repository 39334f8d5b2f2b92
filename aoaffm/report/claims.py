"""Evaluate the paper's claims (:data:`aoaffm.report.paper.CLAIMS`) on our run records.

A claim is a conjunction of comparisons "A has a lower RMSE than B". Its status is
``not reproduced`` when any evaluated comparison fails, else ``not evaluable`` when a needed
run is missing, else ``reproduced``. Where both sides have several seeds, a comparison's
difference *exceeds the seed spread* when |mean_A − mean_B| > std_A + std_B (sample
standard deviations): a deliberately conservative rule that needs no distributional
assumption (two means that far apart are separated by both one-std bands).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import redundancy
from .paper import CLAIMS, DATASET_LABELS, MODEL_LABELS, Claim
from .records import Stat, select, sweep_stats, table_cell

REPRODUCED, NOT_REPRODUCED, NOT_EVALUABLE = "reproduced", "not reproduced", "not evaluable"
SPREAD_RULE = (
    "A difference exceeds the seed spread when |Δmean| > std₁ + std₂ (sample standard "
    "deviations over seeds; both sides need at least two runs, otherwise 'n/a'). The "
    "mechanism claims (planted redundancy) use 95% Student-t intervals over seeds instead: "
    "beyond the spread when the interval excludes 0."
)


@dataclass
class Check:
    """One comparison: holds (True/False, None = missing), its text and the spread verdict."""

    holds: bool | None
    text: str
    beyond_spread: bool | None = None


@dataclass
class ClaimResult:
    claim: Claim
    status: str
    checks: list[Check] = field(default_factory=list)
    note: str = ""

    @property
    def beyond_spread(self) -> str:
        verdicts = [c.beyond_spread for c in self.checks if c.holds is not None]
        known = [v for v in verdicts if v is not None]
        if not known:
            return "n/a"
        if not all(known):
            return "no"
        return "yes" if len(known) == len(verdicts) else "yes (where seeds exist)"

    def to_dict(self) -> dict:
        return {
            "id": self.claim.id,
            "rq": self.claim.rq,
            "claim": self.claim.text,
            "source": self.claim.source,
            "status": self.status,
            "beyond_seed_spread": self.beyond_spread,
            "evidence": [c.text for c in self.checks] + ([self.note] if self.note else []),
        }


PARAM_LABELS = {"embedding_size": "K", "dropout": "dropout", "lambda": "λ"}


def _param(group: str) -> str:
    return PARAM_LABELS.get(group.removeprefix("sweep_"), group)


def _name(dataset: str, model: str) -> str:
    return f"{DATASET_LABELS.get(dataset, dataset)} {MODEL_LABELS.get(model, model)}"


def compare(better: Stat | None, worse: Stat | None, better_name: str, worse_name: str) -> Check:
    """Does ``better`` have the lower mean RMSE? (None when either side is missing)."""
    if better is None or worse is None:
        missing = [n for n, s in ((better_name, better), (worse_name, worse)) if s is None]
        return Check(None, f"no runs for {' and '.join(missing)}")
    if not (math.isfinite(better.mean) and math.isfinite(worse.mean)):
        return Check(
            None, f"non-finite RMSE: {better_name} {better.mean}, {worse_name} {worse.mean}"
        )
    holds = better.mean < worse.mean
    spread = None
    if better.has_spread and worse.has_spread:
        spread = abs(better.mean - worse.mean) > better.std + worse.std
    sign = "<" if holds else "≥"
    text = (
        f"{better_name} {better.format()} {sign} {worse_name} {worse.format()} "
        f"(Δ {better.mean - worse.mean:+.4f})"
    )
    return Check(holds, text, spread)


def _status(checks: list[Check]) -> str:
    if not checks or any(c.holds is None for c in checks):
        if any(c.holds is False for c in checks):
            return NOT_REPRODUCED
        return NOT_EVALUABLE
    return REPRODUCED if all(c.holds for c in checks) else NOT_REPRODUCED


def _check_compare(records, args) -> tuple[list[Check], str]:
    table = args["table"]
    checks = []
    for dataset, better, worse in args["pairs"]:
        a, b = (table_cell(records, table, dataset, m) for m in (better, worse))
        checks.append(
            compare(a and a.stat, b and b.stat, _name(dataset, better), MODEL_LABELS[worse])
        )
    return checks, ""


def _best_other(stats: dict[float, Stat], exclude: float) -> tuple[float, Stat] | None:
    others = [(v, s) for v, s in stats.items() if v != exclude and math.isfinite(s.mean)]
    return min(others, key=lambda vs: vs[1].mean) if others else None


def _check_best_at_max(records, args) -> tuple[list[Check], str]:
    checks, group = [], args["group"]
    largest = set()
    for dataset in args["datasets"]:
        for model in args["models"]:
            stats = sweep_stats(records, group, dataset, model)
            name = _name(dataset, model)
            if len(stats) < 2:
                checks.append(Check(None, f"{name}: fewer than two swept values"))
                continue
            top = max(stats)
            largest.add(top)
            rival = _best_other(stats, top)
            if rival is None:
                checks.append(Check(None, f"{name}: no finite RMSE below K={top:g}"))
                continue
            checks.append(
                compare(stats[top], rival[1], f"{name} K={top:g}", f"K={rival[0]:g} (next best)")
            )
    note = ""
    if largest and largest != {float(args["max"])}:
        note = f"the largest swept K is {sorted(largest)}, not the paper's {args['max']}"
    return checks, note


def _check_helps(records, args) -> tuple[list[Check], str]:
    checks, group, base = [], args["group"], float(args["baseline"])
    param = _param(group)
    for dataset in args["datasets"]:
        for model in args["models"]:
            stats = sweep_stats(records, group, dataset, model)
            name = _name(dataset, model)
            rival = _best_other(stats, base)
            if base not in stats or rival is None:
                checks.append(Check(None, f"{name}: needs runs at {param} = {base:g} and above"))
                continue
            checks.append(
                compare(
                    rival[1],
                    stats[base],
                    f"{name} {param}={rival[0]:g} (best)",
                    f"{param}={base:g}",
                )
            )
    return checks, ""


def _check_argmin(records, args) -> tuple[list[Check], str]:
    checks, group = [], args["group"]
    param = _param(group)
    for dataset, expected in args["expected"].items():
        for model, value in expected.items():
            stats = sweep_stats(records, group, dataset, model)
            name = _name(dataset, model)
            if value not in stats:
                checks.append(Check(None, f"{name}: {param} = {value:g} was not swept"))
                continue
            best = min(stats, key=lambda v: stats[v].mean)
            text = f"{name}: best {param} {best:g} (paper {value:g}; RMSE {stats[best].mean:.4f})"
            checks.append(Check(math.isclose(best, value), text))
    return checks, ""


def _check_dominates(records, args) -> tuple[list[Check], str]:
    checks, group = [], args["group"]
    param = _param(group)
    for dataset, better, worse in args["pairs"]:
        a = sweep_stats(records, group, dataset, better)
        b = sweep_stats(records, group, dataset, worse)
        common = [v for v in a if v in b]
        pair = f"{_name(dataset, better)} vs {MODEL_LABELS.get(worse, worse)}"
        if not common:
            checks.append(Check(None, f"{pair}: no common swept {param} values"))
            continue
        wins = [v for v in common if a[v].mean < b[v].mean]
        needed = len(common) if args["quantifier"] == "all" else len(common) // 2 + 1
        lost = [f"{v:g}" for v in common if v not in wins]
        text = f"{pair}: lower at {len(wins)}/{len(common)} {param} values"
        text += f" (not at {', '.join(lost)})" if lost else ""
        checks.append(Check(len(wins) >= needed, text))
    return checks, ""


def _check_best_beats(records, args) -> tuple[list[Check], str]:
    checks, group = [], args["group"]
    for dataset, better, worse in args["pairs"]:
        best = []
        for model in (better, worse):
            stats = sweep_stats(records, group, dataset, model)
            best.append(min(stats.values(), key=lambda s: s.mean) if stats else None)
        checks.append(
            compare(*best, f"{_name(dataset, better)} (best)", f"{MODEL_LABELS[worse]} (best)")
        )
    return checks, ""


def _check_point_compare(records, args) -> tuple[list[Check], str]:
    checks, group = [], args["group"]
    param = _param(group)
    for dataset, model, better, worse in args["points"]:
        stats = sweep_stats(records, group, dataset, model)
        name = _name(dataset, model)
        checks.append(
            compare(
                stats.get(float(better)),
                stats.get(float(worse)),
                f"{name} {param}={better:g}",
                f"{param}={worse:g}",
            )
        )
    return checks, ""


def _check_gain_order(records, args) -> tuple[list[Check], str]:
    gains = []
    for table, dataset in args["order"]:
        a, b = (table_cell(records, table, dataset, m) for m in (args["better"], args["base"]))
        if a is None or b is None:
            return [Check(None, f"{DATASET_LABELS[dataset]}: missing {table} runs")], ""
        gains.append((dataset, (b.stat.mean - a.stat.mean) / b.stat.mean))
    text = " > ".join(f"{DATASET_LABELS[d]} {g:+.2%}" for d, g in gains)
    ordered = all(g1 > g2 for (_, g1), (_, g2) in zip(gains, gains[1:], strict=False))
    return [
        Check(
            ordered,
            f"relative gain of {MODEL_LABELS[args['better']]} over "
            f"{MODEL_LABELS[args['base']]}: {text}",
        )
    ], ""


def _check_start_helps(records, args) -> tuple[list[Check], str]:
    """Table 3's pre-trained run against its random_start twin (test RMSE, same seeds)."""
    checks = []
    for dataset in args["datasets"]:
        for model in args["models"]:
            random = select(records, "random_start", dataset, model)
            seeds = {r["seed"] for r in random}
            pretrained = [
                r for r in select(records, "table3", dataset, model) if r["seed"] in seeds
            ]
            seeds &= {r["seed"] for r in pretrained}
            if not seeds:
                continue  # the profile compares no start here
            checks.append(
                compare(
                    Stat.of(r["test_rmse"] for r in pretrained if r["seed"] in seeds),
                    Stat.of(r["test_rmse"] for r in random if r["seed"] in seeds),
                    f"{_name(dataset, model)} from the pre-trained FM",
                    "from random",
                )
            )
    if not checks:
        return [Check(None, "no random_start runs beside Table 3's")], ""
    return checks, ""


def _check_redundancy_gain_grows(records, args) -> tuple[list[Check], str]:
    """Per planted kind: the slope against r of the per-seed test-RMSE advantage plain − AoA
    (positive: grows); holds on a positive slope, beyond the spread when its 95% t interval
    excludes 0."""
    better, plain = args["better"], args["plain"]
    checks = []
    for dataset, kind in redundancy.curves(records):
        name = f"{DATASET_LABELS.get(dataset, dataset)}, {kind} copies"
        slope = redundancy.advantage_slope(records, dataset, kind, better, plain)
        if slope is None:
            checks.append(Check(None, f"{name}: needs paired runs at two r or more"))
            continue
        by_r = redundancy.curve_runs(records, dataset, kind, better)
        gaps = {r: redundancy.gap(records, dataset, kind, better, plain, r) for r in by_r}
        listed = "; ".join(f"r={r}: {g.format()}" for r, g in gaps.items() if g is not None)
        checks.append(
            Check(
                slope.estimate > 0,
                f"{name}: slope of {MODEL_LABELS[plain]} − {MODEL_LABELS[better]} test RMSE per "
                f"planted field {slope.format(5)} (95% t interval); gaps "
                f"{MODEL_LABELS[better]} − {MODEL_LABELS[plain]} {listed}",
                slope.low > 0 if slope.known else None,
            )
        )
    return checks, "" if checks else "no planted-redundancy runs in this profile"


def _check_redundancy_q_lower(records, args) -> tuple[list[Check], str]:
    """Per AoA model, kind and r > 0: mean q(planted pairs) − q(original pairs) < 0; beyond
    the spread when its 95% t interval over seeds lies below 0."""
    checks = []
    for dataset, kind in redundancy.curves(records):
        for model in args["models"]:
            for r in redundancy.curve_runs(records, dataset, kind, model):
                diff = redundancy.q_difference(records, dataset, kind, model, r) if r else None
                if diff is None:
                    continue
                name = f"{DATASET_LABELS.get(dataset, dataset)} {MODEL_LABELS[model]}, {kind} r={r}"
                checks.append(
                    Check(
                        diff.estimate < 0,
                        f"{name}: q planted − original {diff.format()} (95% t interval)",
                        diff.high < 0 if diff.known else None,
                    )
                )
    return checks, "" if checks else "no planted-redundancy attention weights in this profile"


def _check_qualitative(records, args) -> tuple[list[Check], str]:
    return [], f"qualitative reading of {args['figure']}; the paper gives no numbers to test"


CHECKS = {
    "compare": _check_compare,
    "sweep_best_at_max": _check_best_at_max,
    "sweep_helps": _check_helps,
    "sweep_argmin": _check_argmin,
    "sweep_dominates": _check_dominates,
    "sweep_best_beats": _check_best_beats,
    "sweep_point_compare": _check_point_compare,
    "gain_order": _check_gain_order,
    "start_helps": _check_start_helps,
    "redundancy_gain_grows": _check_redundancy_gain_grows,
    "redundancy_q_lower": _check_redundancy_q_lower,
    "qualitative": _check_qualitative,
}


def evaluate_claim(claim: Claim, records: list[dict]) -> ClaimResult:
    if claim.kind not in CHECKS:
        raise ValueError(
            f"claim {claim.id}: unknown kind {claim.kind!r}; expected {sorted(CHECKS)}"
        )
    checks, note = CHECKS[claim.kind](records, claim.args)
    return ClaimResult(claim, _status(checks), checks, note)


def evaluate_claims(records: list[dict], claims=CLAIMS) -> list[ClaimResult]:
    return [evaluate_claim(claim, records) for claim in claims]

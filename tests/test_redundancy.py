"""The planted-redundancy experiment: its plan, its training on planted variants, the α / q
extraction, the statistics and the report (issue 16; the planting itself:
test_data_redundancy.py)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from test_identity import _params
from test_train_units import make_synthetic

from aoaffm.config import ConfigError, resolve
from aoaffm.data.redundancy import plant_variants
from aoaffm.experiments import (
    GROUPS,
    REDUNDANCY_GROUPS,
    collect_records,
    datasets_of,
    plan,
    plants,
    redundancy_variants,
    run_group,
    write_attention,
)
from aoaffm.io import read_json
from aoaffm.mechanism import pair_class, summarize
from aoaffm.models import ATTENTION_MODELS, create
from aoaffm.models.attention import attention_weights
from aoaffm.report import build_report, evaluate_claims
from aoaffm.report import redundancy as red
from aoaffm.report.claims import NOT_EVALUABLE, NOT_REPRODUCED, REPRODUCED
from aoaffm.report.paper import CLAIMS
from aoaffm.report.records import make_record, validate_records

# --------------------------------------------------------------------------- the plan


def test_quick_plan_every_model_variant_and_seed_from_its_variants_pretrain():
    cfg = resolve(_params())
    runs = plan(cfg, "redundancy", "frappe")
    pretrains = {p.run_id: p for p in plan(cfg, "redundancy_pretrain", "frappe")}
    section = cfg["redundancy"]
    variants = redundancy_variants(cfg, "frappe")
    expected = len(variants) * len(section["models"]) * section["seeds"]
    assert len(runs) == len({r.run_id for r in runs}) == expected
    for run in runs:
        assert run.data_dir().parts[-2:] == (
            ("frappe", run.variant) if run.planted else ("processed", "frappe")
        )
        assert len(run.planted) == int(run.variant.rsplit("r", 1)[1])
        if run.model in ATTENTION_MODELS:
            pre = pretrains[run.pretrained]
            assert (pre.planted, pre.variant, pre.model) == (
                run.planted,
                run.variant,
                "fm" if run.model in ("afm", "aoafm") else "ffm",
            )
            assert run.pretrained_dir().parts[:2] == ("runs", "redundancy_pretrain")
        else:
            assert run.pretrained is None


def test_r0_runs_are_the_table_runs_with_the_same_settings():
    """A result is reused only when every setting is the same: at the profile's K, r = 0 is
    Table 2's (and Table 3's FM/FFM) runs; a planted variant never is."""
    cfg = resolve(_params())
    tables = {r.run_id for g in ("table2", "table3", "pretrain") for r in plan(cfg, g, "frappe")}
    ours = plan(cfg, "redundancy", "frappe") + plan(cfg, "redundancy_pretrain", "frappe")
    assert not {r.run_id for r in ours if r.planted} & tables
    assert {
        r.run_id for r in ours if not r.planted and r.model != "fm" and r.model != "ffm"
    } <= tables


def test_the_section_changes_only_the_experiments_runs():
    base = _params()
    changed = copy.deepcopy(base)
    changed["quick"]["redundancy"].update(r=[0, 1], kinds=["exact", "coarse"], seeds=3, epsilon=0.5)
    before, after = resolve(base), resolve(changed)
    for group in GROUPS:
        if group in REDUNDANCY_GROUPS:
            continue
        for dataset in datasets_of(before, group):
            assert [r.run_id for r in plan(before, group, dataset, searched=False)] == [
                r.run_id for r in plan(after, group, dataset, searched=False)
            ], group


def test_variants_cycle_over_the_source_fields_with_each_kinds_option():
    params = _params()
    params["quick"]["redundancy"].update(
        kinds=["exact", "noisy", "coarse"], r=[0, 3], fields={"frappe": ["item", "weekday"]}
    )
    variants = redundancy_variants(resolve(params), "frappe")
    assert list(variants) == ["r0", "exact-r3", "noisy-r3", "coarse-r3"]
    assert variants["r0"] == ()
    assert [f for _, f, _ in variants["noisy-r3"]] == ["item", "weekday", "item"]
    assert plants(variants["noisy-r3"])[0] == {"kind": "noisy", "field": "item", "epsilon": 0.2}
    assert plants(variants["coarse-r3"])[1] == {"kind": "coarse", "field": "weekday", "values": 64}
    assert plants(variants["exact-r3"])[2] == {"kind": "exact", "field": "item"}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("kinds", ["mirror"], r"redundancy.kinds = \['mirror'\]; expected a non-empty list"),
        ("r", [0, -1], r"redundancy.r = \[0, -1\]; expected a non-empty list of integers"),
        ("epsilon", 1.5, r"redundancy.epsilon = 1.5; expected a number in \[0, 1\]"),
        ("models", ["hofm"], r"redundancy.models = \['hofm'\]; expected"),
        ("seeds", 0, r"redundancy.seeds = 0; expected an integer >= 1"),
        ("fields", {"frappe": []}, r"redundancy.fields.frappe = \[\]; expected a non-empty"),
        ("embedding_size", 0, r"redundancy.embedding_size = 0; expected an integer >= 1"),
        ("datasets", ["netflix"], r"redundancy.datasets = \['netflix'\]; expected"),
    ],
)
def test_bad_settings_are_one_line_config_errors(key, value, message):
    params = _params()
    params["quick"]["redundancy"][key] = value
    with pytest.raises(ConfigError, match=message) as error:
        resolve(params)
    assert "\n" not in str(error.value)


def test_an_unknown_key_is_refused():
    params = _params()
    params["quick"]["redundancy"]["epsilom"] = 0.1
    with pytest.raises(ConfigError, match="unknown key 'quick.redundancy.epsilom'"):
        resolve(params)


# --------------------------------------------------------------------------- α and q


def test_pair_classes_and_their_means():
    names = ["user", "item", "day", "item~exact1", "item~noisy2"]
    assert pair_class("user", "item", ["item"]) == "original"
    assert pair_class("item~exact1", "user", ["item"]) == "planted"
    assert pair_class("user", "day", ["item"]) == "other"
    assert pair_class("item", "item~exact1", ["item"]) == "duplicate"
    assert pair_class("item~exact1", "item~noisy2", ["item"]) == "duplicate"
    left, right = torch.triu_indices(5, 5, offset=1)
    alpha = np.arange(1, 11, dtype=float)
    alpha /= alpha.sum()
    q = np.linspace(0.5, 1.5, 10)
    out = summarize(names, left.tolist(), right.tolist(), alpha, q, ["item"])
    classes = [pair_class(names[a], names[b], ["item"]) for a, b in zip(left, right, strict=True)]
    for name in ("original", "planted", "other", "duplicate"):
        chosen = [i for i, c in enumerate(classes) if c == name]
        assert out[f"alpha_{name}"] == pytest.approx(10 * alpha[chosen].mean())
        assert out[f"q_{name}"] == pytest.approx(q[chosen].mean())
    assert summarize(names, left.tolist(), right.tolist(), alpha, None, ["item"])["q_planted"] == 1


@pytest.mark.parametrize("name", ATTENTION_MODELS)
def test_attention_weights_are_the_models_alpha_averaged_over_rows(name, tmp_path):
    data = make_synthetic(tmp_path / "data")
    torch.manual_seed(0)
    model = create(name, data.n_features, data.n_fields, 4, attention_size=3)
    split = data.split("validation")
    got = attention_weights(model, split, batch_size=64)  # batches of 64 rows
    ids = torch.from_numpy(np.asarray(split.ids, dtype=np.int64))
    with torch.no_grad():
        alpha = model.attention.attention(model.embedding.pair_products(ids, None))
    assert got["rows"] == len(split.ids)
    assert np.allclose(got["alpha"], alpha.double().mean(0).numpy(), rtol=1e-5, atol=1e-7)
    assert math.isclose(sum(got["alpha"]), 1.0, rel_tol=1e-6)  # softmax rows average to 1
    assert (got["left"], got["right"]) == (
        model.embedding.left.tolist(),
        model.embedding.right.tolist(),
    )
    if name.startswith("aoa"):
        assert got["q"] == pytest.approx(model.attention.pair_weights.tolist())
    else:
        assert got["q"] is None
    assert model.training  # the model's mode is restored


# --------------------------------------------------------------------------- end to end


def _tiny(params: dict) -> dict:
    quick = params["quick"]
    quick["train"] = {**quick.get("train", {}), "epochs": 1}
    quick["model"] = {**quick["model"], "embedding_size": 4, "attention_size": 4}
    quick["datasets"]["frappe"]["batch_size"] = 512
    quick["redundancy"] = {
        "datasets": ["frappe"],
        "fields": {"frappe": ["field1"]},
        "kinds": ["noisy"],
        "r": [0, 2],
        "seeds": 2,
        "models": ["afm", "aoafm"],
    }
    return params


def test_the_experiment_trains_on_its_variants_and_records_alpha_and_q(tmp_path):
    source = make_synthetic(tmp_path / "data" / "frappe")
    cfg = resolve(_tiny(_params()))
    variants = {n: plants(p) for n, p in redundancy_variants(cfg, "frappe").items() if p}
    plant_variants(source, variants, tmp_path / "planted" / "frappe", seed=cfg["seed"])
    kw = {"data_root": tmp_path / "data", "runs_root": tmp_path / "runs"}
    run_group(cfg, "redundancy_pretrain", "frappe", progress=False, **kw)
    trained = run_group(cfg, "redundancy", "frappe", progress=False, **kw)
    assert len(trained) == 2 * 2 * 2  # variants x models x seeds
    written = write_attention(cfg, "frappe", **kw)
    assert len(written) == len(trained) and not write_attention(cfg, "frappe", **kw)  # once
    fields = {tuple(read_json(path)["fields"][4:]) for path in written}
    assert fields == {(), ("field1~noisy1", "field1~noisy2")}  # r = 0 and r = 2
    for spec, metrics in trained:  # planted runs saw the planted columns
        assert metrics["params"] > 0
        assert spec.data_dir(kw["data_root"]).is_dir()
    records = validate_records(
        collect_records({**cfg, "table2": {}, "table3": {}, "table4": {}, "sweeps": {}, "random_start": {}},
                        kw["runs_root"])
    )  # fmt: skip
    ours = [r for r in records if r["group"] == "redundancy"]
    assert {(r["redundancy_kind"], r["redundancy_r"]) for r in ours} == {(None, 0), ("noisy", 2)}
    for r in ours:
        assert r["alpha_original"] > 0 and r["alpha_other"] > 0
        assert (r["alpha_planted"] is None) == (r["redundancy_r"] == 0)
        assert (r["q_original"] == 1.0) == (r["model"] == "afm")


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(("df", "quantile"), [(1, 12.7062), (2, 4.3027), (4, 2.7764), (30, 2.0423)])
def test_t_quantile_matches_the_table(df, quantile):
    """Student-t 97.5% quantiles as printed in statistics tables (4 decimals)."""
    assert red.t_quantile(0.975, df) == pytest.approx(quantile, abs=1e-3)


def test_intervals_mean_and_slope():
    interval = red.mean_interval([1.0, 2.0, 3.0])
    half = red.t_quantile(0.975, 2) * 1.0 / math.sqrt(3)
    assert (interval.estimate, interval.low, interval.high) == pytest.approx(
        (2, 2 - half, 2 + half)
    )
    assert not red.mean_interval([1.0]).known
    exact = red.slope_interval([(0, 1.0), (1, 3.0), (2, 5.0), (4, 9.0)])
    assert exact.estimate == pytest.approx(2.0) and exact.high - exact.low == pytest.approx(
        0, abs=1e-9
    )
    assert red.slope_interval([(1, 1.0), (1, 2.0)]) is None


# --------------------------------------------------------------------------- the report

KINDS = ("exact", "noisy")
RS = (0, 1, 2, 4)
SEEDS = (1, 2, 3)


def synthetic_runs(growth: float, q_gap: float, noise: float = 0.0005) -> list[dict]:
    """Redundancy records whose AoA advantage is ``growth`` per planted field and whose q on
    the copies' pairs is ``q_gap`` below the original's."""
    rng = np.random.default_rng(0)
    records = []
    for kind in KINDS:
        for r in RS:
            if r == 0 and kind != KINDS[0]:
                continue  # r = 0 is one shared variant
            for model in red.MODELS:
                for seed in SEEDS:
                    base = 0.33 + 0.002 * r
                    value = base - (growth * r if model.startswith("aoa") else 0.0)
                    value += rng.normal(0, noise)
                    weights = {}
                    if model in ATTENTION_MODELS:
                        q = model.startswith("aoa")
                        weights = {
                            "alpha_original": 1.2,
                            "alpha_other": 0.9,
                            "q_original": 1.0 if q else 1.0,
                            "q_other": 1.0,
                            **({"alpha_planted": 1.1, "q_planted": 1.0 - (q_gap if q else 0.0)
                                + rng.normal(0, 0.01 if q else 0.0)} if r else {}),
                        }  # fmt: skip
                    records.append(
                        make_record(
                            "redundancy",
                            "frappe",
                            model,
                            seed=seed,
                            validation_rmse=value + 0.001,
                            test_rmse=value,
                            embedding_size=16,
                            attention_size=16,
                            epochs=2,
                            redundancy_kind=kind if r else None,
                            redundancy_r=r,
                            **weights,
                        )
                    )
    return records


MECHANISM = [c for c in CLAIMS if c.rq == "Mechanism"]


def test_claims_reproduced_when_the_mechanism_is_planted_in_the_numbers():
    results = evaluate_claims(synthetic_runs(growth=0.003, q_gap=0.2), MECHANISM)
    assert [r.status for r in results] == [REPRODUCED] * 3
    assert all(r.beyond_spread == "yes" for r in results)
    assert "slope" in results[0].checks[0].text and "r=4" in results[0].checks[0].text


def test_claims_not_reproduced_when_it_is_absent_and_not_evaluable_without_runs():
    results = evaluate_claims(synthetic_runs(growth=-0.003, q_gap=-0.2), MECHANISM)
    assert [r.status for r in results] == [NOT_REPRODUCED] * 3
    assert [r.status for r in evaluate_claims([], MECHANISM)] == [NOT_EVALUABLE] * 3


def test_tables_have_every_model_and_r_with_mean_std_and_gap_intervals():
    records = validate_records(synthetic_runs(growth=0.003, q_gap=0.2))
    table = red.rmse_table(records)
    data = table.data
    rows = {(row.kind, row.r, row.model) for row in data.itertuples()}
    expected = {("none", 0, m) for m in red.MODELS} | {
        (k, r, m) for k in KINDS for r in RS if r for m in red.MODELS
    }
    assert rows == expected
    assert (data.n_runs == len(SEEDS)).all() and data.test_rmse_std.notna().all()
    aoa = data[data.model.isin(["aoafm", "aoaffm"])]
    # the planted growth: AoA − plain at r is -0.003 r, up to the noise's interval
    assert (aoa.gap_test_ci_low <= -0.003 * aoa.r + 1e-9).all()
    assert (aoa.gap_test_ci_high >= -0.003 * aoa.r - 1e-9).all()
    assert data[data.model == "afm"].gap_test.isna().all()
    weights = red.weights_table(records).data
    planted = weights[(weights.r > 0) & weights.model.str.startswith("aoa")]
    assert (planted.q_diff_ci_high < 0).all()


def test_build_report_writes_the_experiments_files_and_section(tmp_path):
    records = synthetic_runs(growth=0.003, q_gap=0.2)
    paths = build_report(
        records,
        {},
        tmp_path / "reports",
        profile="quick",
        datasets=["frappe"],
        redundancy_settings={"fields": {"frappe": ["item"]}, "epsilon": 0.2, "coarse_values": 64},
    )
    for name in ("redundancy", "redundancy_weights"):
        assert paths[f"{name}_csv"].is_file() and paths[f"{name}_md"].is_file()
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = paths["report"].read_text()
    section = text[text.index("## Planted redundancy") : text.index("## Claims checklist")]
    for phrase in ("Frappe: item", "ε = 0.2", "K = 16", "3 seeds", "### Result", "reproduced"):
        assert phrase in section, phrase
    assert "Not run in this profile" in _empty_report(tmp_path)


def _empty_report(tmp_path) -> str:
    paths = build_report([], {}, tmp_path / "empty", profile="quick", datasets=["frappe"])
    return paths["report"].read_text()

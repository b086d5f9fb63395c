"""The paper's claims as paired comparisons (experimentation/claims.py), against numpy."""

import math

import numpy as np
from scipy import stats

from ssl_retrieval.experimentation import claims, configs, intervals, report

SLICES = ("all", "head", "tail", "cold")


def _result(method, fraction, seed, recall, tail=None, head=None):
    def row(value):
        return {
            "recall@50": value,
            "recall@10": value / 2,
            "map@10": value / 4,
            "map@50": value / 4,
            "pair_recall@50": 2 * value,
        }

    metrics = {s: row(recall) for s in SLICES}
    if tail is not None:
        metrics["tail"] = row(tail)
    if head is not None:
        metrics["head"] = row(head)
    return {"method": method, "fraction": fraction, "seed": seed, "params": {}, "metrics": metrics}


def _t_interval(values):
    values = np.asarray(values, float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return values.mean(), half


def test_paired_claims_match_a_numpy_t_interval_and_say_which_side():
    rng = np.random.default_rng(0)
    seeds = range(5)
    base = 0.30 + rng.normal(0, 0.02, 5)  # seed noise far larger than the effects
    noise = rng.normal(0, 0.002, 5)
    results = []
    for s in seeds:
        results += [
            _result("baseline", "1.0", s, base[s], tail=base[s] / 2, head=base[s]),
            _result(
                "cfm", "1.0", s, base[s] + 0.01 + noise[s], tail=base[s] / 2 + 0.02, head=base[s]
            ),
            _result("fd", "1.0", s, base[s] + 0.03 + noise[s]),  # better than CFM
            _result("so", "1.0", s, base[s] + 0.01 + rng.normal(0, 0.02)),  # no clear effect
        ]
    results.append(_result("rfm", "1.0", 0, 0.2))  # one seed only
    found = {f.test: f for f in claims.run_findings(results, ["1.0"], ["baseline", "cfm", "rfm"])}
    cfm = found["cfm - baseline, Recall@50 per query, fraction 1.0"]
    mean, half = _t_interval([base[s] + 0.01 + noise[s] - base[s] for s in seeds])
    assert (cfm.n, cfm.verdict) == (5, claims.HOLDS)
    np.testing.assert_allclose([cfm.mean, cfm.half], [mean, half], rtol=1e-9)
    assert found["cfm - fd, Recall@50 per query, fraction 1.0"].verdict == claims.CONTRADICTED
    assert found["cfm - rfm, Recall@50 per query, fraction 1.0"].verdict == claims.TOO_FEW
    # The unpaired intervals overlap, the paired one does not: pairing is what shows it.
    assert intervals.mean_ci(base + 0.01 + noise)[0] - intervals.mean_ci(base + 0.01 + noise)[1] < (
        intervals.mean_ci(base)[0] + intervals.mean_ci(base)[1]
    )
    # Relative gain on the tail (0.02 / (base / 2)) against the head's (0): larger, every seed.
    tail_vs_head = found["relative gain of cfm on the tail - on the head, fraction 1.0"]
    mean, half = _t_interval([0.02 / (b / 2) for b in base])
    np.testing.assert_allclose([tail_vs_head.mean, tail_vs_head.half], [mean, half], rtol=1e-9)
    assert tail_vs_head.verdict == claims.HOLDS
    assert "| **not run** |" not in claims.table([cfm]) and "**holds**" in claims.table([cfm])


def test_larger_gain_with_less_data_compares_relative_gains_per_seed():
    results = []
    for s, b in enumerate([0.30, 0.32, 0.29]):
        # The same absolute gain at both fractions, on a lower baseline at 0.1: larger relatively.
        results += [_result("baseline", "1.0", s, b), _result("cfm", "1.0", s, b + 0.01)]
        results += [_result("baseline", "0.1", s, b / 3), _result("cfm", "0.1", s, b / 3 + 0.01)]
    found = {f.test: f for f in claims.run_findings(results, ["1.0", "0.1"])}
    larger = found["relative gain of cfm at 0.1 - at 1.0"]
    expected = [0.01 / (b / 3) - 0.01 / b for b in (0.30, 0.32, 0.29)]
    np.testing.assert_allclose(larger.mean, np.mean(expected), rtol=1e-9)
    assert larger.verdict == claims.HOLDS
    assert found["cfm - fd, Recall@50 per query, fraction 1.0"].verdict == claims.NOT_RUN
    # Augmentation variants are compared where their table is: here at 0.1, where only RFM
    # ran, 0.005 below CFM every seed.
    results += [_result("rfm", "0.1", s, b / 3 + 0.005) for s, b in enumerate([0.30, 0.32, 0.29])]
    found = {
        f.test: f
        for f in claims.run_findings(
            results, ["1.0", "0.1"], ["baseline", "cfm", "rfm"], augmentation_fraction="0.1"
        )
    }
    rfm = found["cfm - rfm, Recall@50 per query, fraction 0.1"]
    assert (rfm.n, rfm.verdict) == (3, claims.HOLDS) and math.isclose(rfm.mean, 0.005)
    assert "cfm - rfm, Recall@50 per query, fraction 1.0" not in found


def _trial(method, params, value, fraction="0.1"):
    return {"method": method, "fraction": fraction, "params": params, "value": value}


def test_curves_from_trials_take_the_best_trial_per_value():
    trials = [
        _trial("baseline", {"learning_rate": 0.1}, 0.30),
        _trial("cfm", {"alpha": 0.1, "dropout_rate": 0.1}, 0.31),
        _trial("cfm", {"alpha": 0.1, "dropout_rate": 0.3}, 0.35),
        _trial("cfm", {"alpha": 1.0, "dropout_rate": 0.5}, 0.32),
        _trial("cfm", {"alpha": 3.0, "dropout_rate": 0.3}, 0.25),
        _trial("so", {"alpha": 0.1}, 0.33),
        _trial("so", {"alpha": 1.0}, 0.20),
        _trial("fd", {"dropout_rate": 0.1}, 0.31),
        _trial("fd", {"dropout_rate": 0.5}, 0.32),
        _trial("cfm", {"alpha": 0.1}, 0.99, fraction="1.0"),  # another fraction: ignored
    ]
    assert claims.trial_curve(trials, "cfm", "0.1", "alpha") == [
        (0.1, 0.35, 2),
        (1.0, 0.32, 1),
        (3.0, 0.25, 1),
    ]
    findings = claims.curve_findings(trials, "0.1")
    found = [f.verdict for f in findings]
    assert findings[0].observed == "cfm by alpha: 0.1 0.350, 1 0.320, 3 0.250; baseline 0.300"
    # Below the baseline at alpha 3; above SO at 0.1 and 1.0; peak at 0.3 of (0.1, 0.3, 0.5);
    # FD better at 0.5 than at 0.1, so it does not deteriorate.
    assert found == [claims.HOLDS, claims.HOLDS, claims.HOLDS, claims.NOT_SHOWN]
    assert [f.verdict for f in claims.curve_findings([], "0.1")] == [claims.NOT_RUN] * 4


def test_report_has_the_claims_section_and_trial_figures(tmp_path):
    from ssl_retrieval import atomic

    results = [
        _result(m, "1.0", s, 0.3 + 0.01 * s + (m == "cfm") * 0.01)
        for m in ("baseline", "cfm")
        for s in range(3)
    ]
    trials_path = tmp_path / "trials.jsonl"
    atomic.write_jsonl(
        str(trials_path),
        [_trial("baseline", {}, 0.3), _trial("cfm", {"alpha": 0.1, "dropout_rate": 0.3}, 0.31)],
    )
    config = {
        "output_dir": str(tmp_path),
        "runs_dir": str(tmp_path / "runs"),
        "data_dirs": {"1.0": "d"},
        "methods": {"baseline": "b.cfg", "cfm": "c.cfg"},
        "tables": {"main": {"methods": ["baseline", "cfm"], "fractions": ["1.0"]}},
        "claims": {"trials": str(trials_path), "curve_fraction": "0.1"},
    }
    markdown = report.write_report(results, [], configs.experiment(config), str(tmp_path))
    assert "## What holds of the paper's claims" in markdown
    assert (
        "| cfm - baseline, Recall@50 per query, fraction 1.0 | +0.0100 ± 0.0000 | 3 | **holds** |"
        in markdown
    )
    assert (tmp_path / "figure5_alpha_trials.png").exists()
    # Both metrics when asked: the per-pair differences are twice the per-query ones here.
    config["claims"]["columns"] = ["pair_recall@50", "recall@50"]
    markdown = report.write_report(results, [], configs.experiment(config), str(tmp_path))
    assert markdown.index("### In Recall@50 per pair") < markdown.index(
        "### In Recall@50 per query"
    )
    assert "| cfm - baseline, Recall@50 per pair, fraction 1.0 | +0.0200 ± 0.0000 | 3 |" in markdown
    del config["claims"]
    assert "What holds" not in report.write_report(
        results, [], configs.experiment(config), str(tmp_path)
    )

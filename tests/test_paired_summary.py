"""paired_summary: one method against a baseline across experiments, checked against numpy."""

import json

import numpy as np
from scipy import stats

from ssl_retrieval.experimentation import paired_summary


def _record(method, fraction, seed, recall10, cosine10, cold_share):
    metrics = {
        s: {"recall@10": recall10, "recall@50": recall10 + 0.2} for s in paired_summary.SLICES
    }
    return {
        "method": method,
        "fraction": fraction,
        "seed": seed,
        "params": {},
        "metrics": metrics,
        "evaluations": {"cosine": {s: {"recall@10": cosine10} for s in paired_summary.SLICES}},
        "train": {"blends": {"10": {"cold_share": cold_share}}},
    }


def test_paired_cells_match_numpy_and_missing_datasets_say_not_run(tmp_path):
    baseline = [0.50, 0.52, 0.49]
    method = [0.53, 0.52, 0.51]
    records = [
        _record("recipe", "1.0", s, b, 0.2, 0.2) for s, b in zip((1, 2, 3), baseline, strict=True)
    ]
    records += [
        _record("cfm", "1.0", s, m, 0.1, 0.0) for s, m in zip((1, 2, 3), method, strict=True)
    ]
    records.append(_record("cfm", "1.0", 9, 0.9, 0.9, 0.0))  # no baseline seed 9: not paired
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {
        "title": "t",
        "method": "cfm",
        "baseline": "recipe",
        "output": str(tmp_path / "out" / "report.md"),
        "fractions": ["1.0"],
        "evaluations": ["cosine"],
        "datasets": {"A": str(tmp_path / "a"), "B": str(tmp_path / "missing")},
    }
    markdown = paired_summary.write(config)
    assert (tmp_path / "out" / "report.md").read_text() == markdown

    diffs = np.subtract(method, baseline)
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
    assert diffs.mean() - half < 0  # this toy's interval contains 0
    cell = f"{diffs.mean():+.3f} ± {half:.3f} no difference shown"
    assert f"| A | 1.0 | 3 | {cell} | {cell} | {cell} | {cell} |" in markdown
    # The model alone: cfm is 0.1 below on every seed, an interval of width 0 that excludes 0.
    assert "| A | 1.0 | 3 | -0.100 ± 0.000 **worse** |" in markdown
    assert "| B | 1.0 | 0 | not run | not run | not run | not run |" in markdown
    # Cold slots: the blends' mean share per method, with the number of runs.
    assert "| A | 1.0 | 0.20 (3) | 0.00 (4) |" in markdown
    assert "| B | 1.0 | not run | not run |" in markdown


def test_the_rule_s_validation_table_pairs_the_blends_objectives_from_the_model_dirs(tmp_path):
    baseline = {1: 0.40, 2: 0.43, 3: 0.41}
    method = {1: 0.42, 2: 0.45, 3: 0.43}
    runs_dir = tmp_path / "runs"
    records = []
    for name, values in (("recipe", baseline), ("cfm", method)):
        for seed, value in values.items():
            records.append(_record(name, "0.1", seed, 0.5, 0.2, 0.0))
            model_dir = runs_dir / "0.1" / name / f"seed{seed}"
            model_dir.mkdir(parents=True)
            # The objective is the last number of a choice's value (the mean over slices).
            choices = {"10": {"value": [value]}, "50": {"value": [1.0, value + 0.1]}}
            (model_dir / "blend.json").write_text(json.dumps({"choices": choices}))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "a" / "config.json").write_text(json.dumps({"runs_dir": str(runs_dir)}))
    (tmp_path / "b").mkdir()  # recorded elsewhere: no model dirs here
    (tmp_path / "b" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = {
        "title": "t",
        "method": "cfm",
        "baseline": "recipe",
        "output": str(tmp_path / "report.md"),
        "fractions": ["0.1", "1.0"],
        "datasets": {"A": str(tmp_path / "a"), "B": str(tmp_path / "b")},
    }
    markdown = paired_summary.write(config)
    diffs = np.array([method[s] - baseline[s] for s in (1, 2, 3)])
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
    assert diffs.mean() - half > 0  # this toy's interval excludes 0
    cell = f"{diffs.mean():+.3f} ± {half:.3f} **better**"
    assert f"| A | 0.1 | 3 | {cell} | {cell} |" in markdown
    assert "| B | 0.1 | 0 | no model dirs here | no model dirs here |" in markdown
    assert "| A | 1.0 | 0 | not run | not run |" in markdown

"""Experiments: the run plan, resuming, the report's confidence intervals, and one real run."""

import json
import math
import os
import shutil
import sys

import numpy as np
import pytest
from scipy import stats

from ssl_retrieval import atomic, testing
from ssl_retrieval.experimentation import configs, intervals, launch, report, runner, workers

SLICES = ("all", "head", "tail", "cold")


def _metrics(value: float) -> dict:
    row = {"recall@10": value, "recall@50": 2 * value, "map@10": value / 2, "map@50": value / 2}
    row |= {"pair_recall@10": 3 * value, "pair_recall@50": 4 * value}
    return {s: dict(row) for s in SLICES}


def _result(method, fraction, seed, value, params=None):
    return {
        "run_id": f"{fraction}/{method}/seed{seed}",
        "method": method,
        "fraction": fraction,
        "seed": seed,
        "params": params or {},
        "metrics": _metrics(value),
    }


def test_mean_ci_matches_the_t_interval():
    values = [0.21, 0.25, 0.19, 0.3]
    mean, half, n = intervals.mean_ci(values)
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
    )
    assert n == 4 and math.isclose(mean, np.mean(values))
    assert math.isclose(half, (high - low) / 2, rel_tol=1e-12)
    assert math.isnan(intervals.mean_ci([0.5])[1]) and intervals.mean_ci([])[2] == 0


def test_table_reports_mean_ci_and_relative_change():
    results = [_result("baseline", "1.0", s, v) for s, v in enumerate([0.1, 0.2, 0.3])]
    results += [_result("cfm", "1.0", s, v) for s, v in enumerate([0.2, 0.3, 0.4])]
    results.append(_result("cfm", "0.1", 0, 0.9))  # another fraction: not in this table
    results.append(_result("cfm", "1.0", 0, 0.9, {"alpha": 3.0}))  # a sweep point: not either
    markdown = report.table(results, "1.0", ["baseline", "cfm"], columns=("recall@10",))
    half = stats.t.ppf(0.975, 2) * np.std([0.2, 0.3, 0.4], ddof=1) / math.sqrt(3)
    rows = markdown.splitlines()
    assert rows[2].startswith("| baseline | 3 | 0.2000 ± ") and "%" not in rows[2]
    assert rows[3] == f"| cfm | 3 | 0.3000 ± {half:.4f} (+50.0%) |"


def test_paired_differences_use_seed_matched_runs():
    base = [0.10, 0.30, 0.20, 0.25]
    cfm = [0.12, 0.31, 0.23, 0.26]  # always above, by a little; seeds vary a lot
    results = [_result("baseline", "1.0", s, v) for s, v in enumerate(base)]
    results += [_result("cfm", "1.0", s, v) for s, v in enumerate(cfm)]
    results.append(_result("cfm", "1.0", 9, 0.9))  # no baseline for seed 9: not paired
    mean, half, n = intervals.paired_differences(
        results, "1.0", "cfm", "baseline", "all", "recall@10"
    )
    diffs = np.subtract(cfm, base)
    assert n == 4 and math.isclose(mean, diffs.mean())
    assert math.isclose(half, stats.t.ppf(0.975, 3) * diffs.std(ddof=1) / 2)
    assert intervals.verdict(mean, half, n) == "better"
    # Unpaired, the two intervals overlap: only the pairing shows the difference.
    assert (
        intervals.mean_ci(cfm[:4])[0] - intervals.mean_ci(cfm[:4])[1] < intervals.mean_ci(base)[0]
    )
    markdown = report.paired_table(results, "1.0", ["baseline", "cfm"])
    assert "| cfm | 4 | +0.0175 ± " in markdown and "(better)" in markdown
    assert intervals.verdict(0.01, 0.02, 5) == "no difference shown"
    assert intervals.verdict(-0.05, 0.02, 5) == "worse"


def test_sweep_points_average_seeds_per_value():
    results = [_result("cfm", "0.1", s, v, {"alpha": 0.3}) for s, v in enumerate([0.1, 0.3])]
    results.append(_result("cfm", "0.1", 0, 0.5, {"alpha": 1.0}))
    points = report.sweep_points(results, "0.1", "alpha", "cfm")
    assert [p[0] for p in points] == [0.3, 1.0]
    assert math.isclose(points[0][1], 2 * 0.2) and math.isclose(points[1][1], 1.0)


def _typed(config: dict) -> configs.ExperimentConfig:
    return configs.experiment({"output_dir": "out", **config})


CONFIG = {
    "title": "test",
    "methods": {"baseline": "b.cfg", "cfm": "c.cfg"},
    "seeds": [0, 1],
    "tables": {
        "main": {"methods": ["baseline", "cfm"], "fractions": ["1.0", "0.1"]},
        "augmentations": {"methods": ["baseline", "cfm"], "fractions": ["1.0"]},
    },
    "sweeps": {
        "alpha": {"methods": ["cfm"], "values": [0.1, 1.0], "fraction": "0.1", "seeds": [0]}
    },
}


@pytest.fixture(autouse=True)
def _flagfiles_of_config(tmp_path, monkeypatch):
    """CONFIG's flagfiles, empty, in the working directory (a run without its flagfile waits)."""
    monkeypatch.chdir(tmp_path)
    for name in ("b.cfg", "c.cfg"):
        (tmp_path / name).write_text("")


def test_plan_deduplicates_tables_and_adds_sweep_points():
    runs = runner.plan(
        _typed({**CONFIG, "runs_dir": "r", "data_dirs": {"1.0": "d1", "0.1": "d01"}})
    )
    ids = [r.run_id for r in runs]
    assert len(ids) == len(set(ids)) == 2 * 2 * 2 + 2
    assert "0.1/cfm_alpha=0.1/seed0" in ids and "1.0/baseline/seed1" in ids


def test_a_method_can_name_a_flagfile_per_fraction():
    config = {**CONFIG, "runs_dir": "r", "data_dirs": {"1.0": "d1", "0.1": "d01"}}
    config["methods"] = {"baseline": "b.cfg", "cfm": {"1.0": "c_1.cfg", "0.1": "c_01.cfg"}}
    config = _typed(config)
    train, _, _ = runner.commands(config, runner.Run("cfm", "0.1", 0))
    assert "--flagfile=c_01.cfg" in train and "--data_dir=d01" in train
    train, _, _ = runner.commands(config, runner.Run("cfm", "1.0", 0))
    assert "--flagfile=c_1.cfg" in train


def _fake_runner(calls):
    """Stands in for train/evaluate subprocesses: evaluate writes a metrics file, train nothing."""

    def run(args):
        calls.append(args)
        flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
        if args[2] != "ssl_retrieval.evaluate":
            return
        if "recommender" in flags:
            path = flags["output"]
            payload = {"metrics": _metrics(0.05)}
        elif "output" in flags:  # a further evaluation of a run
            path = flags["output"]
            payload = {"metrics": _metrics(0.01)}
        else:
            path = os.path.join(flags["model_dir"], "metrics.json")
            payload = {"metrics": _metrics(0.1 if "baseline" in flags["model_dir"] else 0.2)}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(payload, f)

    return run


def _toy_config(tmp_path) -> dict:
    """CONFIG with its output, runs and two fake data dirs under tmp_path."""
    return {
        **CONFIG,
        "output_dir": str(tmp_path / "report"),
        "runs_dir": str(tmp_path / "runs"),
        "data_dirs": {
            "1.0": _fake_data_dir(tmp_path / "d1"),
            "0.1": _fake_data_dir(tmp_path / "d01"),
        },
    }


def test_further_evaluations_are_run_recorded_and_keyed(tmp_path):
    config = {
        **_toy_config(tmp_path),
        "tables": {"main": {"methods": ["cfm"], "fractions": ["1.0"]}},
    }
    config["sweeps"] = {}
    config["seeds"] = [0]
    config["evaluations"] = {"cosine": ["--popularity_prior=0", "--prior_share=1"]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    calls = []
    runner.run_experiment(str(path), runner=_fake_runner(calls))
    evaluations = [c for c in calls if c[2] == "ssl_retrieval.evaluate"]
    assert len(evaluations) == 2
    model_dir = str(tmp_path / "runs" / "1.0" / "cfm" / "seed0")
    assert evaluations[1][-3:] == [
        "--popularity_prior=0",
        "--prior_share=1",
        f"--output={model_dir}/metrics_cosine.json",
    ]
    (record,) = report.read_results(str(tmp_path / "report" / "results.jsonl"))
    assert record["evaluations"]["cosine"] == _metrics(0.01)
    assert record["metrics"] == _metrics(0.2)
    assert record["key"]["evaluate"]["more"] == {
        "cosine": ["--popularity_prior=0", "--prior_share=1"]
    }
    # Recorded: nothing runs again. Another further evaluation is another run.
    calls.clear()
    runner.run_experiment(str(path), runner=_fake_runner(calls))
    assert calls == []
    config["evaluations"] = {"cosine": ["--popularity_prior=0"]}
    path.write_text(json.dumps(config))
    runner.run_experiment(str(path), runner=_fake_runner(calls))
    assert [c[2] for c in calls] == [
        "ssl_retrieval.train",
        "ssl_retrieval.evaluate",
        "ssl_retrieval.evaluate",
    ]


def test_list_size_sections_pair_each_evaluation_with_the_baseline_s(tmp_path):
    config = _typed({**_toy_config(tmp_path), "evaluations": {"cosine": ["--prior_share=1"]}})
    results = []
    for seed, (base, better) in enumerate(((0.50, 0.55), (0.40, 0.47), (0.45, 0.51))):
        for method, value in (("baseline", base), ("cfm", better)):
            results.append(
                {
                    "method": method,
                    "fraction": "1.0",
                    "seed": seed,
                    "params": {},
                    "metrics": _metrics(value),
                    "evaluations": {"cosine": _metrics(value / 2)},
                }
            )
    references = [{"recommender": "top_popular", "fraction": "1.0", "metrics": _metrics(0.3)}]
    lines = report.list_size_sections(results, references, config, ["1.0"])
    text = "\n".join(lines)
    # cfm - baseline: +0.05, +0.07, +0.06 (with the blend); halved under the cosine evaluation.
    assert "| cfm | 3 | +0.0600 ± 0.0248 (better)" in text
    assert "| cfm (cosine) | 3 | +0.0300 ± 0.0124 (better)" in text
    assert "Paired differences against `baseline (cosine)`" in text
    assert "| best reference | top_popular 0.3000" in text


def test_run_experiment_resumes_and_writes_the_report(tmp_path):
    config = {
        **_toy_config(tmp_path),
        "references": ["top_popular"],
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    calls = []
    summary = runner.run_experiment(str(path), runner=_fake_runner(calls))
    assert summary["results"] == 10
    trains = [c for c in calls if c[2] == "ssl_retrieval.train"]
    assert len(trains) == 10
    assert any("--alpha=1.0" in c for c in trains) and any("--seed=1" in c for c in trains)
    report_md = (tmp_path / "report" / "report.md").read_text()
    assert "## Table 1: training fraction 1.0" in report_md
    assert "| cfm | 2 | 0.2000 ± 0.0000 (+100.0%)" in report_md
    assert "| top_popular | 0.1 |" in report_md
    assert (tmp_path / "report" / "figure5_alpha.png").stat().st_size > 1000
    assert len(report.read_results(str(tmp_path / "report" / "results.jsonl"))) == 10

    # An interrupted run (no metrics, no record): --report_only trains nothing and reports the
    # finished runs.
    results_path = str(tmp_path / "report" / "results.jsonl")
    records = report.read_results(results_path)
    interrupted = "1.0/cfm/seed1"
    atomic.write_jsonl(results_path, [r for r in records if r["run_id"] != interrupted])
    os.remove(tmp_path / "runs" / "1.0" / "cfm" / "seed1" / "metrics.json")
    calls.clear()
    summary = runner.run_experiment(str(path), report_only=True, runner=_fake_runner(calls))
    assert calls == [] and summary["results"] == 9

    # The experiment resumes: finished runs are neither trained nor evaluated again.
    runner.run_experiment(str(path), runner=_fake_runner(calls))
    assert [c[2] for c in calls] == ["ssl_retrieval.train", "ssl_retrieval.evaluate"]
    assert any(a.endswith("1.0/cfm/seed1") for a in calls[0])


def _fake_data_dir(path, num_items=10):
    """What the ledger's fingerprint reads from a data dir."""
    os.makedirs(os.path.join(path, "stats"), exist_ok=True)
    with open(os.path.join(path, "stats.json"), "w") as f:
        json.dump({"num_items": num_items}, f)
    with open(os.path.join(path, "stats", "candidate_counts.tsv"), "w") as f:
        f.write("a\t3\n")
    return str(path)


def test_a_fresh_clone_resumes_from_the_committed_results(tmp_path):
    config = {
        **CONFIG,
        "sweeps": {},
        "output_dir": str(tmp_path / "report"),
        "runs_dir": str(tmp_path / "runs"),
        "data_dirs": {
            "1.0": _fake_data_dir(tmp_path / "d1"),
            "0.1": _fake_data_dir(tmp_path / "d01"),
        },
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))

    def trained(calls):
        return sorted(next(a for a in c if a.startswith("--model_dir=")) for c in calls)

    calls = []
    runner.run_experiment(str(path), runner=_fake_runner(calls))
    assert len(trained(c for c in calls if c[2] == "ssl_retrieval.train")) == 8
    # A fresh clone has results.jsonl but no model dirs: nothing is trained again.
    shutil.rmtree(tmp_path / "runs")
    calls.clear()
    summary = runner.run_experiment(str(path), runner=_fake_runner(calls))
    assert calls == [] and summary["results"] == 8
    # Other data at 0.1 (say a newer package index): its runs are trained again, not mixed in.
    _fake_data_dir(tmp_path / "d01", num_items=11)
    runner.run_experiment(str(path), runner=_fake_runner(calls))
    retrained = trained(c for c in calls if c[2] == "ssl_retrieval.train")
    assert len(retrained) == 4 and all("/0.1/" in d for d in retrained)
    # Another flag: every run is trained again, also where its model dir is here (train
    # resumes or refuses it; evaluate measures it again).
    config["extra_flags"] = ["--epochs=2"]
    path.write_text(json.dumps(config))
    calls.clear()
    runner.run_experiment(str(path), runner=_fake_runner(calls))
    assert len([c for c in calls if c[2] == "ssl_retrieval.train"]) == 8


def test_stopping_midway_keeps_the_records_of_runs_not_reached_yet(tmp_path):
    """An interrupted sitting must not drop later runs' records from results.jsonl (a fresh
    clone would train them again)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**_toy_config(tmp_path), "sweeps": {}}))
    runner.run_experiment(str(path), runner=_fake_runner([]))
    results_path = tmp_path / "report" / "results.jsonl"
    records = [json.loads(line) for line in results_path.read_text().splitlines()]
    assert len(records) == 8
    # Runs 2 and 3 are not recorded (say, a sitting that had not reached them); this sitting
    # trains run 2 and is stopped during run 3.
    kept = [records[0], *records[3:]]
    results_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    shutil.rmtree(tmp_path / "runs")
    calls = []
    fake = _fake_runner(calls)

    def stopped_at_the_second_training(args):
        if args[2] == "ssl_retrieval.train" and any(c[2] == args[2] for c in calls):
            raise KeyboardInterrupt
        fake(args)

    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(str(path), runner=stopped_at_the_second_training)
    after = [json.loads(line)["run_id"] for line in results_path.read_text().splitlines()]
    assert sorted(after) == sorted(r["run_id"] for r in [*records[:2], *records[3:]])


def test_a_run_whose_flagfile_is_not_written_yet_waits_and_the_others_go_on(tmp_path):
    """Final runs can start while tuning goes on: a method's runs wait for its flagfile."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**_toy_config(tmp_path), "sweeps": {}}))
    os.remove(tmp_path / "c.cfg")
    calls = []
    summary = runner.run_experiment(str(path), runner=_fake_runner(calls))
    trained = [c for c in calls if c[2] == "ssl_retrieval.train"]
    assert summary["results"] == len(trained) == 4
    assert all("--flagfile=b.cfg" in c for c in trained)
    assert "| cfm |" not in (tmp_path / "report" / "report.md").read_text()
    # Once tuning has written it, the waiting runs go and the finished ones are not redone.
    (tmp_path / "c.cfg").write_text("")
    calls.clear()
    summary = runner.run_experiment(str(path), runner=_fake_runner(calls))
    trained = [c for c in calls if c[2] == "ssl_retrieval.train"]
    assert summary["results"] == 8 and len(trained) == 4
    assert all("--flagfile=c.cfg" in c for c in trained)


def test_failed_run_stops_with_its_stderr(tmp_path):
    config = {**CONFIG, "output_dir": str(tmp_path / "r"), "runs_dir": str(tmp_path / "runs")}
    config["data_dirs"] = {"1.0": "d1", "0.1": "d01"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))

    def failing(args):
        launch.run_subprocess(args + ["--no_such_flag_anywhere=1"])

    with pytest.raises(RuntimeError, match="no_such_flag_anywhere"):
        runner.run_experiment(str(path), runner=failing)


def test_a_failed_command_is_a_changed_run_only_by_trains_exit_status():
    with pytest.raises(launch.ChangedRun, match="exit.3"):
        launch.run_subprocess([sys.executable, "-c", "import sys; sys.exit(3)", "exit 3"])
    with pytest.raises(RuntimeError) as failed:
        launch.run_subprocess([sys.executable, "-c", "import sys; sys.exit(1)", "exit 1"])
    assert not isinstance(failed.value, launch.ChangedRun)


def test_a_run_of_another_config_in_a_model_dir_is_set_aside_and_trained_again(tmp_path):
    """An unfinished run left by an earlier command (a flagfile or a default changed since):
    the runner keeps it beside the dir and trains the planned command afresh."""
    config = {**_toy_config(tmp_path), "sweeps": {}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    stale = tmp_path / "runs" / "1.0" / "baseline" / "seed0"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("another config")
    calls, fake = [], _fake_runner([])

    def run(args):
        calls.append(args)
        model_dir = dict(a[2:].split("=", 1) for a in args if "=" in a)["model_dir"]
        config_path = os.path.join(model_dir, "config.json")
        if args[2] == "ssl_retrieval.train" and os.path.exists(config_path):
            raise launch.ChangedRun(f"error: {model_dir} holds a run with a different config")
        fake(args)

    summary = runner.run_experiment(str(path), runner=run, fractions=["1.0"], methods=["baseline"])
    assert summary["results"] == 2
    aside = list(stale.parent.glob("seed0.replaced-*"))
    assert len(aside) == 1 and (aside[0] / "config.json").read_text() == "another config"
    assert (stale / "metrics.json").exists()
    trains = [c for c in calls if c[2] == "ssl_retrieval.train"]
    assert len(trains) == 3  # seed 0 twice (refused, then afresh), seed 1 once
    record = json.loads((tmp_path / "report" / "results.jsonl").read_text().splitlines()[0])
    assert "wall_seconds" in record  # it started fresh, so its time is the run's


@pytest.mark.slow
def test_real_experiment_on_tiny_data(tmp_path):
    """Real train and evaluate subprocesses, references and the t-SNE figure, end to end."""
    data_dir = testing.make_data_dir(str(tmp_path / "data"))
    tiny = "--batch_size=32\n--hidden_layers=32,16\n--embedding_dim=8\n--train_steps=30\n"
    for method in ("baseline", "cfm"):
        (tmp_path / f"{method}.cfg").write_text(f"--method={method}\n{tiny}")
    config = {
        "title": "tiny",
        "output_dir": str(tmp_path / "report"),
        "runs_dir": str(tmp_path / "runs"),
        "data_dirs": {"1.0": data_dir},
        "methods": {m: str(tmp_path / f"{m}.cfg") for m in ("baseline", "cfm")},
        "seeds": [0, 1],
        "tables": {"main": {"methods": ["baseline", "cfm"], "fractions": ["1.0"]}},
        "references": ["top_popular", "cooccurrence"],
        "tsne": {
            "methods": ["baseline", "cfm"],
            "fraction": "1.0",
            "seed": 0,
            "color_by": "category",
        },
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    runner.run_experiment(str(path))
    results = report.read_results(str(tmp_path / "report" / "results.jsonl"))
    assert len(results) == 4
    for r in results:
        assert 0.0 <= r["metrics"]["all"]["recall@10"] <= r["metrics"]["all"]["recall@50"] <= 1.0
    # A trained model retrieves far better than chance (10 of 240 items).
    assert min(r["metrics"]["all"]["recall@50"] for r in results) > 50 / 240
    assert (tmp_path / "report" / "figure4_tsne.png").stat().st_size > 5000
    assert "| cooccurrence | 1.0 |" in (tmp_path / "report" / "report.md").read_text()


def test_reference_check_names_the_best_reference_per_slice_and_the_verdict():
    # Recall@50 of the recipe: 0.40, 0.42, 0.44 (mean 0.42, half-width 4.303 * 0.02 / sqrt 3).
    results = [_result("recipe", "1.0", seed, v) for seed, v in enumerate((0.20, 0.21, 0.22))]
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    references = [
        {"recommender": "knn", "fraction": "1.0", "metrics": _metrics(0.1)},  # 0.2
        {"recommender": "cooc", "fraction": "1.0", "metrics": _metrics(0.15)},  # 0.3
        {"recommender": "cooc", "fraction": "0.1", "metrics": _metrics(0.3)},  # other fraction
    ]
    references[0]["metrics"]["cold"]["recall@50"] = 0.42 + half / 2  # inside the interval
    references[1]["metrics"]["tail"]["recall@50"] = 0.42 + 2 * half  # above the interval
    text = report.reference_check(results, "1.0", ["recipe"], references)
    best, row = text.splitlines()[2:4]
    assert best == (
        f"| best reference | cooc 0.3000 | cooc 0.3000 | cooc {0.42 + 2 * half:.4f} "
        f"| knn {0.42 + half / 2:.4f} |"
    )
    cells = [c.strip() for c in row.split("|")[2:-1]]
    assert [c.rsplit(" ", 1)[1] for c in cells] == ["above", "above", "below", "within"]
    assert cells[0].startswith(f"0.4200 ± {half:.4f}")
    # One run has no interval: it is only higher or lower, never "above".
    one = report.reference_check(results[:1], "1.0", ["recipe"], references).splitlines()[3]
    cells = [c.strip() for c in one.split("|")[2:-1]]
    assert cells == ["0.4000 (one run) higher"] * 2 + ["0.4000 (one run) lower"] * 2


def test_table_3_is_written_per_pair_and_per_query():
    results = [_result("baseline", "1.0", s, 0.1) for s in range(2)]
    results += [_result("cfm", "1.0", s, 0.2) for s in range(2)]
    results[-1]["metrics"]["tail"]["pair_recall@10"] = 0.9  # only the per-pair tail moves
    per_pair = report.head_tail_table(results, "1.0", ["baseline", "cfm"], per="pair")
    per_query = report.head_tail_table(results, "1.0", ["baseline", "cfm"], per="query")
    pair_mean = (0.6 + 0.9) / 2
    assert per_pair.splitlines()[3].startswith(f"| cfm | 2 | {pair_mean:.4f} ± ")
    assert per_pair.splitlines()[2].startswith("| baseline | 2 | 0.3000 ± 0.0000 | 0.4000 ± ")
    assert per_query.splitlines()[3] == (
        "| cfm | 2 | 0.2000 ± 0.0000 (+100.0%) | 0.4000 ± 0.0000 (+100.0%) | "
        "0.2000 ± 0.0000 (+100.0%) | 0.4000 ± 0.0000 (+100.0%) |"
    )


def test_wall_time_sums_the_timed_records_and_estimates_the_others_by_fraction():
    records = [
        {"fraction": "1.0", "wall_seconds": 3000.0},
        {"fraction": "0.1", "wall_seconds": 1260.0},
        {"fraction": "0.1", "wall_seconds": 660.0},
        {"fraction": "0.1"},  # counted at 960 s, the mean of its fraction's timed ones
    ]
    assert report.wall_time(records) == (
        "1 h 22 min, 3 of 4 timed; about 1 h 38 min for all 4, each untimed one counted at the "
        "mean of the timed ones of its training fraction"
    )
    # A fraction without a timed record takes the mean of all timed ones (1640 s here).
    assert report.wall_time(records[:3] + [{"fraction": "0.01"}]).startswith(
        "1 h 22 min, 3 of 4 timed; about 1 h 49 min for all 4"
    )
    assert report.wall_time(records[:3]) == "1 h 22 min, 3 of 3 timed"
    assert report.wall_time([{}]) == "not timed"


def test_the_report_names_the_runs_that_used_their_whole_budget():
    def run(name, stopped_early, steps=9):
        train = {"stopped_early": stopped_early, "steps": steps, "max_steps": 10}
        return {"run_id": name, "train": train}

    early = [run("a", True), run("b", True)]
    assert report.budget_sentence(early) == (
        "Every run stopped early on validation, before its step budget (2)."
    )
    text = report.budget_sentence([*early, run("c", False), {"run_id": "d"}])
    assert text.startswith("1 of 3 runs trained to the end of their step budget")
    assert "`c`" in text and "`a`" not in text and "1 has no training summary" in text
    # Patience that ran out at the budget's last step (as train reported it before) is the
    # budget's end too.
    text = report.budget_sentence([*early, run("e", True, steps=10)])
    assert text.startswith("1 of 3 runs trained to the end") and "`e`" in text


def test_fractions_train_only_those_and_report_the_recorded_rest(tmp_path):
    config = {
        **_toy_config(tmp_path),
        "sweeps": {},
        "tsne": {"methods": ["cfm"], "fraction": "1.0", "seed": 0, "color_by": "section"},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    calls = []
    summary = runner.run_experiment(str(path), runner=_fake_runner(calls), fractions=["0.1"])
    trains = [c for c in calls if c[2] == "ssl_retrieval.train"]
    assert len(trains) == summary["results"] == 4  # 2 methods x 2 seeds at 0.1, none at 1.0
    assert all("--data_dir=" + str(tmp_path / "d01") in c for c in trains)
    report_md = (tmp_path / "report" / "report.md").read_text()
    assert "## Table 1: training fraction 1.0\n\n" + report.NOT_YET in report_md
    assert "## Paired differences against `baseline` (fraction 1.0)" not in report_md
    # No t-SNE: its runs (fraction 1.0) are not finished.
    assert not (tmp_path / "report" / "figure4_tsne.png").exists()
    # Then 1.0 alone: the 0.1 runs are recorded by the same commands, so they stay in the report.
    calls.clear()
    config["tsne"] = {}
    path.write_text(json.dumps(config))
    summary = runner.run_experiment(str(path), runner=_fake_runner(calls), fractions=["1.0"])
    assert summary["results"] == 8
    assert len([c for c in calls if c[2] == "ssl_retrieval.train"]) == 4
    report_md = (tmp_path / "report" / "report.md").read_text()
    assert "## Table 2a: training fraction 0.1" in report_md
    assert "| cfm | 2 | 0.2000 ± 0.0000 (+100.0%)" in report_md


def test_methods_train_only_those_and_combine_with_fractions(tmp_path):
    config = {**_toy_config(tmp_path), "sweeps": {}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    calls = []
    summary = runner.run_experiment(
        str(path), runner=_fake_runner(calls), fractions=["1.0"], methods=["baseline"]
    )
    trains = [c for c in calls if c[2] == "ssl_retrieval.train"]
    assert len(trains) == summary["results"] == 2  # baseline x 2 seeds at 1.0 only
    assert all("--data_dir=" + str(tmp_path / "d1") in c for c in trains)
    assert all("--flagfile=b.cfg" in c for c in trains)
    # Then every method: the baseline's runs are recorded, so only cfm's are trained.
    calls.clear()
    summary = runner.run_experiment(str(path), runner=_fake_runner(calls), fractions=["1.0"])
    trains = [c for c in calls if c[2] == "ssl_retrieval.train"]
    assert len(trains) == 2 and summary["results"] == 4
    assert all("--flagfile=c.cfg" in c for c in trains)


def test_two_workers_train_each_run_once_and_keep_each_others_records(tmp_path):
    """A second experiments process starts while the first trains its first run: it skips
    that run, trains the rest, and the first finds them recorded; no record is lost."""
    config = {**_toy_config(tmp_path), "sweeps": {}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    first, second = [], []
    run_second = _fake_runner(second)
    run_first = _fake_runner(first)

    def first_worker(args):
        if not first:  # while it holds its first run, the second worker goes through the plan
            runner.run_experiment(str(path), runner=run_second)
        run_first(args)

    summary = runner.run_experiment(str(path), runner=first_worker)
    trained = [
        next(a for a in c if a.startswith("--model_dir="))
        for c in first + second
        if c[2] == "ssl_retrieval.train"
    ]
    assert len(trained) == len(set(trained)) == summary["results"] == 8
    assert len([c for c in first if c[2] == "ssl_retrieval.train"]) == 1
    records = atomic.read_jsonl(str(tmp_path / "report" / "results.jsonl"))
    assert [r["run_id"] for r in records] == [r.run_id for r in runner.plan(_typed(config))]
    assert "| cfm | 2 |" in (tmp_path / "report" / "report.md").read_text()


def test_a_run_another_worker_finished_after_this_one_passed_it_stays_recorded(tmp_path):
    config = {**_toy_config(tmp_path), "sweeps": {}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    # Another worker holds the plan's first run as this one starts, so this one passes it...
    held = [workers.claim(workers.lock_path(config["runs_dir"], "1.0/baseline/seed0"))]
    run_first, run_other = _fake_runner([]), _fake_runner([])

    def first_worker(args):
        if held:  # ... and finishes it while this one trains the next
            held.pop().close()
            runner.run_experiment(
                str(path), runner=run_other, fractions=["1.0"], methods=["baseline"]
            )
        run_first(args)

    runner.run_experiment(str(path), runner=first_worker)
    records = atomic.read_jsonl(str(tmp_path / "report" / "results.jsonl"))
    assert [r["run_id"] for r in records] == [r.run_id for r in runner.plan(_typed(config))]


def test_a_worker_of_another_config_keeps_the_records_it_only_reused(tmp_path):
    """A worker with the old flags at 0.1 reuses 0.1's old records while it trains at 1.0; a
    worker with new flags at 0.1 records those runs again meanwhile: the new records stay."""
    old = {**_toy_config(tmp_path), "sweeps": {}}
    new = {**old, "fraction_flags": {"0.1": ["--epochs=7"]}}
    old_path, new_path = tmp_path / "old.json", tmp_path / "new.json"
    old_path.write_text(json.dumps(old))
    new_path.write_text(json.dumps(new))
    runner.run_experiment(str(old_path), runner=_fake_runner([]), seeds=["0"])
    again = [_fake_runner([])]

    def old_worker(args):
        if again:  # while it trains its first 1.0 run, the new config records 0.1 again
            runner.run_experiment(str(new_path), runner=again.pop(), fractions=["0.1"])
        _fake_runner([])(args)

    runner.run_experiment(str(old_path), runner=old_worker, fractions=["1.0"])
    states = dict((run.run_id, state) for run, state in runner.status(_typed(new)))
    at_01 = [run.run_id for run in runner.plan(_typed(new)) if run.fraction == "0.1"]
    assert at_01 and all(states[run_id] == "recorded" for run_id in at_01)
    # The old worker's own runs are recorded too.
    assert all(
        state == "recorded" for run, state in runner.status(_typed(old)) if run.fraction == "1.0"
    )


def test_a_claimed_run_is_not_claimed_again_until_released(tmp_path):
    path = workers.lock_path(str(tmp_path), "0.1/cfm/seed1")
    assert path.endswith("0.1_cfm_seed1.lock")
    held = workers.claim(path)
    assert held is not None and workers.claim(path) is None
    held.close()
    again = workers.claim(path)
    assert again is not None
    again.close()


def test_a_claim_goes_with_the_subprocesses_started_under_it(tmp_path):
    """So that it lasts while the run trains, even if the worker alone is killed."""
    path = workers.lock_path(str(tmp_path), "1.0/baseline/seed1")
    with workers.claim(path):
        (fd,) = workers.held_fds()
        check = f"import os, sys; sys.exit(os.readlink('/proc/self/fd/{fd}') != {path!r})"
        launch.run_subprocess([sys.executable, "-c", check])
    assert workers.held_fds() == ()
    with pytest.raises(RuntimeError):  # and without a claim, no descriptor is passed
        launch.run_subprocess([sys.executable, "-c", check])


def test_unknown_methods_or_fractions_are_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**_toy_config(tmp_path), "sweeps": {}}))
    with pytest.raises(ValueError, match=r"--methods: no planned run has \['basline'\]"):
        runner.run_experiment(str(path), runner=_fake_runner([]), methods=["basline"])
    with pytest.raises(ValueError, match=r"--fractions: no planned run has \['0.5'\]"):
        runner.run_experiment(str(path), runner=_fake_runner([]), fractions=["0.5"])


def test_report_only_reports_unrecorded_model_dirs_without_taking_them_for_finished(tmp_path):
    """A model dir evaluated under another command (say, a smaller budget): --report_only shows
    it, but the next pass still runs train and evaluate for it."""
    config = {**_toy_config(tmp_path), "sweeps": {}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    model_dir = tmp_path / "runs" / "1.0" / "baseline" / "seed0"
    model_dir.mkdir(parents=True)
    (model_dir / "metrics.json").write_text(json.dumps({"metrics": _metrics(0.1)}))
    summary = runner.run_experiment(str(path), report_only=True, runner=_fake_runner([]))
    assert summary["results"] == 1
    (record,) = atomic.read_jsonl(str(tmp_path / "report" / "results.jsonl"))
    assert "unverified" in record and "key" not in record
    report_md = (tmp_path / "report" / "report.md").read_text()
    assert "1 of 1 runs are reported as found in their model dirs" in report_md
    assert "`1.0/baseline/seed0`" in report_md
    calls = []
    runner.run_experiment(str(path), runner=_fake_runner(calls), fractions=["1.0"])
    trained = [c for c in calls if c[2] == "ssl_retrieval.train"]
    assert any(f"--model_dir={model_dir}" in c for c in trained)


def test_dry_run_status_counts_what_is_left_and_estimates_its_time(tmp_path):
    """The status the experiments CLI's --dry_run prints: each run recorded, to run or waiting
    for its flagfile, and per fraction the runs left times the mean timed run there."""
    config = {**_toy_config(tmp_path), "sweeps": {}}
    config["methods"] = {"baseline": "b.cfg", "cfm": {"1.0": "c.cfg", "0.1": "c_01.cfg"}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    runner.run_experiment(str(path), runner=_fake_runner([]), fractions=["1.0"])
    states = dict((run.run_id, state) for run, state in runner.status(_typed(config)))
    assert states["1.0/cfm/seed1"] == states["1.0/baseline/seed0"] == "recorded"
    assert states["0.1/baseline/seed0"] == "to run"
    assert states["0.1/cfm/seed1"] == "waits for c_01.cfg"
    # The fake runs took no time: give the recorded ones 120 and 240 s, two of the four.
    results = tmp_path / "report" / "results.jsonl"
    records = atomic.read_jsonl(str(results))
    records[0]["wall_seconds"], records[1]["wall_seconds"] = 120.0, 240.0
    for record in records[2:]:
        record.pop("wall_seconds", None)
    atomic.write_jsonl(str(results), records)
    text = runner.status_text(_typed(config))
    assert "fraction 1.0: 4 recorded, 0 to run, 0 waiting for their flagfiles\n" in text
    assert "fraction 0.1: 0 recorded, 2 to run, 2 waiting for their flagfiles; no run timed" in text
    # A third seed: 2 runs left at 1.0, at 3 min each, the mean of the 2 timed there.
    config["seeds"] = [*config["seeds"], 7]
    text = runner.status_text(_typed(config))
    assert (
        "fraction 1.0: 4 recorded, 2 to run, 0 waiting for their flagfiles; about 0 h 6 min "
        "left at 3.0 min a run (the mean of the 2 timed runs)"
    ) in text


def test_a_run_is_recorded_with_its_flagfile_as_it_started(tmp_path):
    """Tuning may rewrite a flagfile while a final run trains from it (--parallel): the record
    says what the run trained with."""
    config = {**_toy_config(tmp_path), "sweeps": {}, "seeds": [0]}
    (tmp_path / "c.cfg").write_text("--dropout_rate=0.3\n")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    fake = _fake_runner([])

    def run(args):
        fake(args)
        if args[2] == "ssl_retrieval.train" and "--flagfile=c.cfg" in args:
            (tmp_path / "c.cfg").write_text("--dropout_rate=0.5\n")

    runner.run_experiment(str(path), runner=run, fractions=["1.0"])
    record = next(
        r
        for r in atomic.read_jsonl(str(tmp_path / "report" / "results.jsonl"))
        if r["method"] == "cfm"
    )
    assert record["train_config"]["dropout_rate"] == 0.3
    # So the next pass, reading 0.5, trains it again instead of taking it for the new choice.
    calls = []
    runner.run_experiment(str(path), runner=_fake_runner(calls), fractions=["1.0"])
    assert [c for c in calls if "--flagfile=c.cfg" in c and c[2] == "ssl_retrieval.train"]


def test_other_blend_options_run_train_and_evaluate_again_but_no_other_flag_does(tmp_path):
    """The blend is keyed apart: a record whose training matches and whose blend options do
    not goes through train (which chooses the blend of a finished run again, or trains it
    where its model dir is gone) and evaluate; without a blend, its options are never read."""
    config = {**_toy_config(tmp_path), "sweeps": {}, "seeds": [0]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    calls, fake = [], _fake_runner([])

    def run(args):  # train writes config.json first, as the real one does
        calls.append(args)
        model_dir = dict(a[2:].split("=", 1) for a in args if "=" in a)["model_dir"]
        os.makedirs(model_dir, exist_ok=True)
        open(os.path.join(model_dir, "config.json"), "a").close()
        fake(args)

    runner.run_experiment(str(path), runner=run)
    assert len(calls) == 2 * 4
    config["extra_flags"] = ["--blend_margin=0.5"]
    path.write_text(json.dumps(config))
    shutil.rmtree(tmp_path / "runs" / "0.1")  # these model dirs are gone: trained afresh
    calls.clear()
    runner.run_experiment(str(path), runner=run)
    assert [c[2] for c in calls] == ["ssl_retrieval.train", "ssl_retrieval.evaluate"] * 4
    records = {
        r["run_id"]: r for r in atomic.read_jsonl(str(tmp_path / "report" / "results.jsonl"))
    }
    timed = sorted(name for name, r in records.items() if "wall_seconds" in r)
    assert timed == ["0.1/baseline/seed0", "0.1/cfm/seed0"]  # the others went on from theirs
    # Runs that choose no blend: another blend option is not another run.
    config["extra_flags"] = ["--nochoose_popularity_prior", "--blend_margin=0.5"]
    path.write_text(json.dumps(config))
    runner.run_experiment(str(path), runner=run)
    config["extra_flags"] = ["--nochoose_popularity_prior", "--blend_margin=0.1"]
    path.write_text(json.dumps(config))
    calls.clear()
    runner.run_experiment(str(path), runner=run)
    assert calls == []


def test_seeds_train_only_those_and_references_only_for_the_fractions_chosen(tmp_path):
    config = {**_toy_config(tmp_path), "sweeps": {}, "references": ["top_popular"]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    calls = []
    summary = runner.run_experiment(
        str(path), runner=_fake_runner(calls), fractions=["0.1"], seeds=["1"]
    )
    trains = [c for c in calls if c[2] == "ssl_retrieval.train"]
    assert len(trains) == summary["results"] == 2  # 2 methods x seed 1 at 0.1
    assert all("--seed=1" in c for c in trains)
    # The reference of the fraction chosen is computed; 1.0's (a tuned peer can take many
    # minutes) waits for a call that trains 1.0.
    references = [c for c in calls if any(a.startswith("--recommender=") for a in c)]
    assert [a for c in references for a in c if a.startswith("--data_dir=")] == [
        "--data_dir=" + str(tmp_path / "d01")
    ]
    calls.clear()
    runner.run_experiment(str(path), runner=_fake_runner(calls), fractions=["1.0"], seeds=[0])
    assert {a for c in calls for a in c if a.startswith("--seed=")} == {"--seed=0"}
    assert any(
        "--data_dir=" + str(tmp_path / "d1") in c for c in calls if "--recommender=top_popular" in c
    )
    with pytest.raises(ValueError, match="--seeds: no planned run has \\[7\\]"):
        runner.run_experiment(str(path), runner=_fake_runner([]), seeds=[7])


def test_a_config_with_fewer_fractions_keeps_the_other_fractions_records(tmp_path):
    """Two configs share a report dir, one planning a single fraction (a subset to run first):
    its records file keeps the other fraction's runs, so the full config still reports them."""
    config = {**_toy_config(tmp_path), "sweeps": {}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    runner.run_experiment(str(path), runner=_fake_runner([]))
    results = tmp_path / "report" / "results.jsonl"
    everything = {json.loads(line)["run_id"] for line in results.read_text().splitlines()}
    assert {"1.0/baseline/seed0", "0.1/cfm/seed1"} <= everything
    subset = {**config, "data_dirs": {"0.1": config["data_dirs"]["0.1"]}}
    subset["fraction_flags"] = {}
    subset["tables"] = {"main": {"methods": ["baseline", "cfm"], "fractions": ["0.1"]}}
    subset_path = tmp_path / "subset.json"
    subset_path.write_text(json.dumps(subset))
    summary = runner.run_experiment(str(subset_path), runner=_fake_runner([]))
    assert summary["results"] == 4  # its own plan: 0.1 only
    kept = {json.loads(line)["run_id"] for line in results.read_text().splitlines()}
    assert kept == everything
    calls = []
    summary = runner.run_experiment(str(path), runner=_fake_runner(calls))
    assert summary["results"] == len(everything)
    assert not [c for c in calls if c[2] == "ssl_retrieval.train"]


def test_records_an_earlier_default_made_stay_on_disk_until_their_runs_are_redone(tmp_path):
    config = {**_toy_config(tmp_path), "sweeps": {}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    runner.run_experiment(str(path), runner=_fake_runner([]))
    results = tmp_path / "report" / "results.jsonl"
    before = results.read_text().splitlines()
    # The baseline's flagfile changes (as a default would): its records no longer stand for
    # its runs, so the report leaves them out until they are redone, but the file keeps them.
    (tmp_path / "b.cfg").write_text("--temperature=0.5\n")
    summary = runner.run_experiment(str(path), runner=_fake_runner([]), methods=["cfm"])
    assert summary["results"] == len(before) - 4  # baseline x 2 fractions x 2 seeds
    assert sorted(results.read_text().splitlines()) == sorted(before)
    # Redone, they are replaced, not doubled.
    runner.run_experiment(str(path), runner=_fake_runner([]))
    after = [json.loads(line)["run_id"] for line in results.read_text().splitlines()]
    assert sorted(after) == sorted(json.loads(line)["run_id"] for line in before)

"""Tuning: the seeded trial plan, choosing on validation, flagfiles, resuming."""

import dataclasses
import json
import os
import shutil
import threading
import time

import pytest

from ssl_retrieval import atomic
from ssl_retrieval import config as config_lib
from ssl_retrieval.experimentation import configs, ledger, tuning, workers

GRID = {"alpha": [0.3, 0.1, 1.0], "dropout_rate": [0.3, 0.5]}


@pytest.fixture(autouse=True)
def _flagfiles(tmp_path, monkeypatch):
    """The toy configs' flagfiles, empty, in the working directory (a tuning needs its own)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    for name in ("b", "c", "fm"):
        (tmp_path / "configs" / f"{name}.cfg").write_text("")


def test_trial_points_are_distinct_seeded_and_start_with_the_defaults():
    points = tuning.trial_points(GRID, 4, seed=0)
    assert len(points) == 4 and points[0] == {"alpha": 0.3, "dropout_rate": 0.3}
    assert len({json.dumps(p, sort_keys=True) for p in points}) == 4
    assert points == tuning.trial_points(GRID, 4, seed=0)
    assert points != tuning.trial_points(GRID, 4, seed=1)
    assert len(tuning.trial_points(GRID, 100, seed=0)) == 6  # the whole grid, no repeats
    assert tuning.trial_points({}, 5, seed=0) == [{}]


def _flag(args, name):
    prefix = f"--{name}="
    return next(a[len(prefix) :] for a in args if a.startswith(prefix))


def _fake_data_dir(path):
    """What the ledger's fingerprint reads from a data dir."""
    (path / "stats").mkdir(parents=True)
    (path / "stats.json").write_text('{"num_items": 10}')
    (path / "stats" / "candidate_counts.tsv").write_text("a\t1\n")
    return str(path)


def _fake_trainer(calls):
    """Writes what a validating training run writes; validation value from the flags."""

    def run(args):
        calls.append(args)
        model_dir = _flag(args, "model_dir")
        alpha = float(next((a.split("=")[1] for a in args if a.startswith("--alpha=")), 0.3))
        value = 0.5 - abs(alpha - 1.0) / 10  # best at alpha 1.0
        if "0.1" in _flag(args, "data_dir"):
            value -= 0.2
        rate = next((float(a.split("=")[1]) for a in args if a.startswith("--learning_rate=")), 0)
        if rate:  # best at 0.05 on the 0.1 data, at 0.1 on the rest
            value -= abs(rate - (0.05 if "0.1" in _flag(args, "data_dir") else 0.1))
        os.makedirs(model_dir, exist_ok=True)
        with open(os.path.join(model_dir, "config.json"), "w") as f:
            f.write("{}")  # train writes it first
        with open(os.path.join(model_dir, "validation.jsonl"), "w") as f:
            f.write(json.dumps({"step": 100, "value": value, "metrics": {"all": {}}}) + "\n")
        with open(os.path.join(model_dir, "train_metrics.json"), "w") as f:
            json.dump({"steps": 200, "best_step": 100, "best_validation_recall@50": value}, f)

    return run


def _toy_paths(tmp_path) -> dict:
    """A toy tuning config's name and output paths, under tmp_path."""
    return {
        "name": "toy",
        "output_dir": str(tmp_path / "out"),
        "runs_dir": str(tmp_path / "runs"),
        "flagfile_dir": str(tmp_path / "flags"),
    }


def _two_fractions(tmp_path) -> dict:
    """The paths of a toy tuning config with fractions 0.1 and 1.0."""
    return {
        **_toy_paths(tmp_path),
        "data_dirs": {
            "0.1": _fake_data_dir(tmp_path / "data_0.1"),
            "1.0": _fake_data_dir(tmp_path / "data"),
        },
    }


def test_run_tuning_chooses_on_validation_writes_flagfiles_and_resumes(tmp_path):
    config = {
        **_two_fractions(tmp_path),
        "fraction_flags": {"0.1": ["--train_steps=300"]},
        "common_flags": ["--validate_every=100", "--patience=3"],
        "methods": {
            "baseline": {"flagfile": "configs/b.cfg"},
            "cfm": {"flagfile": "configs/c.cfg", "grid": GRID},
        },
        "trials": 6,
    }
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(config))
    calls = []
    summary = tuning.run_tuning(str(path), runner=_fake_trainer(calls))
    assert summary["trials"] == len(calls) == 2 * (1 + 6)
    assert all("--validate_every=100" in c for c in calls)
    trials = [json.loads(line) for line in open(tmp_path / "out" / "trials.jsonl")]
    assert len(trials) == 14 and {t["fraction"] for t in trials} == {"0.1", "1.0"}
    # Two trials tie at alpha 1.0 (dropout does not matter here): the earlier one wins.
    winner = next(t for t in trials if t["fraction"] == "0.1" and t["params"].get("alpha") == 1.0)
    dropout = winner["params"]["dropout_rate"]
    cfm_flagfile = (tmp_path / "flags" / "toy_cfm_0.1.cfg").read_text().splitlines()
    assert cfm_flagfile[1:] == [
        "--flagfile=configs/c.cfg",
        "--train_steps=300",
        "--alpha=1.0",
        f"--dropout_rate={dropout}",
    ]
    assert "0.3000" in cfm_flagfile[0]
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "| 1.0 | cfm | 6 | alpha=1.0, dropout_rate=" in readme and "| 0.5000 |" in readme
    assert all(t["wall_seconds"] >= 0 for t in trials)
    assert "Wall time of the trials on this machine: 0 h 0 min, 14 of 14 timed." in readme
    # Resuming: nothing is trained again.
    calls.clear()
    tuning.run_tuning(str(path), runner=_fake_trainer(calls))
    assert calls == []
    # A trial recorded from another command is trained again, even where its model dir is here
    # (train resumes or refuses it).
    config["common_flags"] = ["--validate_every=100", "--patience=5"]
    path.write_text(json.dumps(config))
    tuning.run_tuning(str(path), runner=_fake_trainer(calls))
    assert len(calls) == 14
    # Those model dirs had been trained in: no wall time of a whole trial this time.
    trials = [json.loads(line) for line in open(tmp_path / "out" / "trials.jsonl")]
    assert not any("wall_seconds" in t for t in trials)


def _backbone_config(tmp_path) -> dict:
    return {
        **_two_fractions(tmp_path),
        "common_flags": ["--validate_every=100"],
        "methods": {
            "baseline": {
                "flagfile": "configs/b.cfg",
                "grid": {"learning_rate": [0.2, 0.05, 0.1], "temperature": [0.07]},
            },
            "cfm": {"flagfile": "configs/c.cfg", "grid": GRID},
        },
        "backbone": {"method": "baseline", "params": ["learning_rate", "temperature"]},
        "promote": {"1.0": {"from": "0.1", "top": 2}},
        "variants": {
            "fm": {"flagfile": "configs/fm.cfg", "like": "cfm", "params": ["alpha"]},
        },
        "trials": 3,
    }


def test_every_method_is_tuned_on_the_backbone_the_baseline_was_tuned_to(tmp_path):
    """The paper's protocol: learning rate and temperature are searched on the baseline at
    each fraction; the other methods search only their own flags, on those values."""
    config = _backbone_config(tmp_path)
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(config))
    calls = []
    tuning.run_tuning(str(path), runner=_fake_trainer(calls))
    trials = [json.loads(line) for line in open(tmp_path / "out" / "trials.jsonl")]

    def tried(method, fraction):
        return [t["params"] for t in trials if (t["method"], t["fraction"]) == (method, fraction)]

    # The baseline is tried on its grid; it is best at 0.05 on the 0.1 data.
    assert [p["learning_rate"] for p in tried("baseline", "0.1")] == [0.2, 0.05, 0.1]
    cfm_at_01 = tried("cfm", "0.1")
    assert len(cfm_at_01) == 3
    assert all(p["learning_rate"] == 0.05 and p["temperature"] == 0.07 for p in cfm_at_01)
    cfm_commands = [c for c in calls if "--flagfile=configs/c.cfg" in c]
    assert all("--learning_rate=0.05" in c for c in cfm_commands[:3])
    # At 1.0 the baseline is tried at its 2 best points of 0.1 (0.05, 0.1) and is best at 0.1
    # there: CFM's 2 best points of 0.1 are tried with the backbone of 1.0, not of 0.1.
    assert [p["learning_rate"] for p in tried("baseline", "1.0")] == [0.05, 0.1]
    ranked = sorted(
        (t for t in trials if t["method"] == "cfm" and t["fraction"] == "0.1"),
        key=lambda t: -t["value"],
    )
    assert tried("cfm", "1.0") == [{**t["params"], "learning_rate": 0.1} for t in ranked[:2]]
    flags = (tmp_path / "flags" / "toy_cfm_1.0.cfg").read_text().splitlines()
    assert "--learning_rate=0.1" in flags and "--temperature=0.07" in flags
    # A variant takes the backbone with its listed flags.
    variant = (tmp_path / "flags" / "toy_fm_0.1.cfg").read_text().splitlines()[2:]
    assert variant == ["--alpha=1.0", "--learning_rate=0.05", "--temperature=0.07"]
    assert "tuned on baseline at each fraction" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["methods"]["cfm"]["grid"].update(learning_rate=[0.1]), "backbone"),
        (lambda c: c.update(methods=dict(reversed(c["methods"].items()))), "first of methods"),
        (lambda c: c["methods"]["baseline"]["grid"].pop("temperature"), "must have"),
    ],
)
def test_a_backbone_config_that_cannot_work_is_an_error(tmp_path, change, message):
    config = _backbone_config(tmp_path)
    change(config)
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        tuning.run_tuning(str(path), runner=_fake_trainer([]))


def test_a_fresh_clone_resumes_from_the_committed_trials(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    (data_dir / "stats").mkdir(parents=True)
    (data_dir / "stats.json").write_text('{"num_items": 10}')
    (data_dir / "stats" / "candidate_counts.tsv").write_text("a\t1\n")
    config = {
        **_toy_paths(tmp_path),
        "data_dirs": {"1.0": str(data_dir)},
        "common_flags": ["--validate_every=100"],
        "methods": {"cfm": {"flagfile": str(tmp_path / "c.cfg"), "grid": GRID}},
        "trials": 3,
    }
    (tmp_path / "common.cfg").write_text("--batch_size=64\n")
    (tmp_path / "c.cfg").write_text(f"# cfm\n--flagfile={tmp_path / 'common.cfg'}\n--method=cfm\n")
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(config))
    calls = []
    tuning.run_tuning(str(path), runner=_fake_trainer(calls))
    assert len(calls) == 3
    first = (tmp_path / "out" / "trials.jsonl").read_text()
    # No model dirs (a fresh clone): the committed trials stand, nothing is trained.
    shutil.rmtree(tmp_path / "runs")
    calls.clear()
    tuning.run_tuning(str(path), runner=_fake_trainer(calls))
    assert calls == [] and (tmp_path / "out" / "trials.jsonl").read_text() == first
    # A sitting stopped at trial 2 (unrecorded) keeps trial 3's record for the next one.
    lines = first.splitlines(keepends=True)
    (tmp_path / "out" / "trials.jsonl").write_text(lines[0] + lines[2])

    def stopped(args):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tuning.run_tuning(str(path), runner=stopped)
    assert (tmp_path / "out" / "trials.jsonl").read_text() == lines[0] + lines[2]
    tuning.run_tuning(str(path), runner=_fake_trainer(calls))
    ids = [json.loads(line)["trial_id"] for line in lines]
    after = (tmp_path / "out" / "trials.jsonl").read_text().splitlines()
    assert len(calls) == 1 and [json.loads(line)["trial_id"] for line in after] == ids
    calls.clear()
    # A changed common flag makes them different trials.
    config["common_flags"] = ["--validate_every=50"]
    path.write_text(json.dumps(config))
    tuning.run_tuning(str(path), runner=_fake_trainer(calls))
    assert len(calls) == 3
    # So does other data.
    shutil.rmtree(tmp_path / "runs")
    calls.clear()
    (data_dir / "stats" / "candidate_counts.tsv").write_text("a\t2\n")
    tuning.run_tuning(str(path), runner=_fake_trainer(calls))
    assert len(calls) == 3
    # So does a flagfile whose contents changed under the same name, even a nested one.
    shutil.rmtree(tmp_path / "runs")
    calls.clear()
    (tmp_path / "common.cfg").write_text("--batch_size=128\n")
    tuning.run_tuning(str(path), runner=_fake_trainer(calls))
    assert len(calls) == 3
    # And another default of the package (a command's unset flags take it).
    shutil.rmtree(tmp_path / "runs")
    calls.clear()
    fields = {f.name: f for f in dataclasses.fields(config_lib.TrainConfig)}
    monkeypatch.setattr(fields["ssl_temperature"], "default", 0.2)
    tuning.run_tuning(str(path), runner=_fake_trainer(calls))
    assert len(calls) == 3


def test_a_trial_that_did_not_validate_is_an_error(tmp_path):
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "train_metrics.json").write_text(json.dumps({"steps": 3}))
    with pytest.raises(ValueError, match="validate_every"):
        tuning._trial_record("baseline", "1.0", {}, str(model_dir))


def test_a_ledger_that_is_not_json_lines_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "trials.jsonl"
    assert ledger.load(str(path), "trial_id") == {}  # no ledger yet: nothing recorded
    path.write_text('{"trial_id": "a", "value": 1}\n\n{"trial_id": "b", "value": 2}\n')
    assert set(ledger.load(str(path), "trial_id")) == {"a", "b"}
    path.write_text('{"trial_id": "a"}\n{"trial_id": "b", \n')
    with pytest.raises(ValueError, match=r"trials.jsonl: line 2 is not JSON"):
        ledger.load(str(path), "trial_id")


def test_a_promoted_fraction_tries_the_best_points_of_the_cheaper_one(tmp_path):
    config = {
        **_two_fractions(tmp_path),
        "common_flags": ["--validate_every=100"],
        "methods": {"cfm": {"flagfile": "configs/c.cfg", "grid": GRID}},
        "trials": 5,
        "promote": {"1.0": {"from": "0.1", "top": 2}},
        "variants": {
            "fm": {"flagfile": "configs/fm.cfg", "like": "cfm", "params": ["alpha"]},
        },
    }
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(config))
    # Before any trial, the promoted fraction has nothing to try.
    assert [f for _, f, _ in tuning.plan(configs.tuning(config))] == ["0.1"] * 5
    calls = []
    trainer = _fake_trainer(calls)
    ready_before_full = []

    def runner(args):
        # A fraction's flagfiles are written as soon as its trials are done, before the next.
        if _flag(args, "data_dir").endswith("data"):
            ready_before_full.append((tmp_path / "flags" / "toy_cfm_0.1.cfg").exists())
        trainer(args)

    tuning.run_tuning(str(path), runner=runner)
    assert ready_before_full == [True, True]
    trials = [json.loads(line) for line in open(tmp_path / "out" / "trials.jsonl")]
    cheap = sorted(
        (t for t in trials if t["fraction"] == "0.1"), key=lambda t: -t["value"]
    )  # stable: ties keep trial order, as promotion does
    full = [t["params"] for t in trials if t["fraction"] == "1.0"]
    assert len(calls) == 5 + 2 and full == [t["params"] for t in cheap[:2]]
    # The fake trainer is best at alpha 1.0: both promoted points have it, and no point at 0.1
    # with alpha 1.0 was left behind for a worse one.
    assert all(p["alpha"] == 1.0 for p in full)
    assert tuning.plan(configs.tuning(config), trials)[-2:] == [("cfm", "1.0", p) for p in full]
    # The variant gets cfm's chosen alpha at every fraction, and only the flags listed.
    for fraction in ("0.1", "1.0"):
        lines = (tmp_path / "flags" / f"toy_fm_{fraction}.cfg").read_text().splitlines()
        assert lines[0].startswith("# Not tuned: fm takes the values cfm was tuned to")
        assert lines[1:] == ["--flagfile=configs/fm.cfg", "--alpha=1.0"]
    assert "| fm | cfm | alpha |" in (tmp_path / "out" / "README.md").read_text()
    # Only where the variant is wanted, when it says.
    config["variants"]["fm"]["fractions"] = ["1.0"]
    shutil.rmtree(tmp_path / "flags")
    path.write_text(json.dumps(config))
    tuning.run_tuning(str(path), runner=runner)
    assert sorted(p.name for p in (tmp_path / "flags").glob("toy_fm_*")) == ["toy_fm_1.0.cfg"]


def test_a_fraction_promoted_from_a_later_one_is_an_error(tmp_path):
    config = {
        **_toy_paths(tmp_path),
        "data_dirs": {"1.0": "a", "0.1": "b"},
        "methods": {"cfm": {"flagfile": "configs/c.cfg", "grid": GRID}},
        "promote": {"1.0": {"from": "0.1", "top": 2}},
    }
    with pytest.raises(ValueError, match="must list before it"):
        configs.tuning(config)
    config["data_dirs"] = {"0.1": "b", "1.0": "a"}
    config["promote"]["1.0"]["top"] = 0
    with pytest.raises(ValueError, match="positive integer 'top'"):
        configs.tuning(config)


def test_raising_a_budget_retrains_only_the_trials_it_capped(tmp_path):
    """A fresh clone given a larger budget trains again only the trials that used all of it."""
    data_dir = _fake_data_dir(tmp_path / "data")
    (tmp_path / "data" / "stats.json").write_text('{"num_items": 10, "num_train_pairs": 6400}')
    config = {
        **_toy_paths(tmp_path),
        "data_dirs": {"1.0": data_dir},
        "fraction_flags": {"1.0": ["--epochs=3"]},  # 100 batches of 64 an epoch: 300 steps
        "common_flags": ["--validate_every=100", "--batch_size=64"],
        "methods": {"cfm": {"flagfile": "configs/c.cfg", "grid": GRID}},
        "trials": 4,
    }
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(config))
    calls = []
    fake = _fake_trainer(calls)

    def trainer(args):
        """Trials at alpha 1.0 improve to the end of their budget; the others stop at 200."""
        fake(args)
        budget = round(float(_flag(args, "epochs")) * 100)
        steps = budget if _flag(args, "alpha") == "1.0" else 200
        summary_path = os.path.join(_flag(args, "model_dir"), "train_metrics.json")
        with open(summary_path) as f:
            summary = json.load(f)
        with open(summary_path, "w") as f:
            json.dump({**summary, "steps": steps}, f)

    tuning.run_tuning(str(path), runner=trainer)
    trials = [json.loads(line) for line in open(tmp_path / "out" / "trials.jsonl")]
    capped = [t["params"] for t in trials if t["params"]["alpha"] == 1.0]
    assert len(calls) == 4 and 0 < len(capped) < 4
    readme = (tmp_path / "out" / "README.md").read_text()
    assert f"{len(capped)} of 4 trials used their whole step budget" in readme
    assert readme.count("`1.0/cfm/alpha=1.0,") == len(capped)
    shutil.rmtree(tmp_path / "runs")  # a fresh clone
    calls.clear()
    config["fraction_flags"] = {"1.0": ["--epochs=6"]}
    path.write_text(json.dumps(config))
    tuning.run_tuning(str(path), runner=trainer)
    assert [{k: float(_flag(c, k)) for k in GRID} for c in calls] == capped
    after = [json.loads(line) for line in open(tmp_path / "out" / "trials.jsonl")]
    assert [t["trial_id"] for t in after] == [t["trial_id"] for t in trials]
    # The records kept stand for the new budget too: the next sitting takes them as they are.
    calls.clear()
    tuning.run_tuning(str(path), runner=trainer)
    assert calls == []
    # Trials that stop early under the budget are not listed.
    config["methods"]["cfm"]["grid"] = {"alpha": [0.3, 0.1], "dropout_rate": [0.3]}
    path.write_text(json.dumps(config))
    tuning.run_tuning(str(path), runner=trainer)
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "Every trial stopped early, before its step budget (2 trials)." in readme


def _two_methods(tmp_path) -> dict:
    return {
        **_toy_paths(tmp_path),
        "data_dirs": {"0.1": _fake_data_dir(tmp_path / "data_0.1")},
        "common_flags": ["--validate_every=100"],
        "methods": {
            "baseline": {"flagfile": "configs/b.cfg"},
            "cfm": {"flagfile": str(tmp_path / "c.cfg"), "grid": {"alpha": [0.3, 1.0]}},
        },
        "variants": {"fm": {"flagfile": "configs/fm.cfg", "like": "cfm", "params": ["alpha"]}},
        "trials": 2,
    }


def _watching(flags: dict):
    """A fake trainer that first notes which of `flags` (name -> path) exist; and its notes."""
    seen, fake = [], _fake_trainer([])

    def trainer(args):
        seen.append({name: f.exists() for name, f in flags.items()})
        fake(args)

    return trainer, seen


def test_flagfiles_whose_choice_may_change_are_removed_until_their_trials_are_done(tmp_path):
    """Final runs beside the tuning must not train from an earlier tuning's choice."""
    (tmp_path / "c.cfg").write_text("--method=cfm\n")
    config = _two_methods(tmp_path)
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(config))
    tuning.run_tuning(str(path), runner=_fake_trainer([]))
    flags = {name: tmp_path / "flags" / f"toy_{name}_0.1.cfg" for name in ("baseline", "cfm", "fm")}
    assert all(f.exists() for f in flags.values())
    # A new CFM grid point: while it trains, the baseline's choice stands; CFM's and its
    # variant's are gone.
    config["methods"]["cfm"]["grid"]["alpha"].append(3.0)
    config["trials"] = 3
    path.write_text(json.dumps(config))
    trainer, seen = _watching(flags)
    tuning.run_tuning(str(path), runner=trainer)
    assert seen == [{"baseline": True, "cfm": False, "fm": False}]
    assert all(f.exists() for f in flags.values())
    assert "--alpha=1.0" in flags["cfm"].read_text().splitlines()  # still the best


def test_a_fraction_that_depends_on_nothing_undecided_keeps_its_flagfile(tmp_path):
    """Tuning goes fraction by fraction; a finished fraction listed after one that trains
    again keeps its choice unless it is promoted from it."""
    (tmp_path / "c.cfg").write_text("--method=cfm\n")
    config = {
        **_toy_paths(tmp_path),
        "data_dirs": {
            "0.1": _fake_data_dir(tmp_path / "data_0.1"),
            "0.01": _fake_data_dir(tmp_path / "data_0.01"),
            "1.0": _fake_data_dir(tmp_path / "data"),
        },
        "common_flags": ["--validate_every=100"],
        "methods": {"cfm": {"flagfile": str(tmp_path / "c.cfg"), "grid": GRID}},
        "trials": 2,
        "promote": {"1.0": {"from": "0.1", "top": 1}},
    }
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(config))
    tuning.run_tuning(str(path), runner=_fake_trainer([]))
    flags = {f: tmp_path / "flags" / f"toy_cfm_{f}.cfg" for f in ("0.1", "0.01", "1.0")}
    assert all(f.exists() for f in flags.values())
    # New data at 0.1: its trials train again. Meanwhile 0.01's choice stands, and 1.0's,
    # whose points are 0.1's best, waits for them.
    (tmp_path / "data_0.1" / "stats.json").write_text('{"num_items": 11}')
    trainer, seen = _watching(flags)
    tuning.run_tuning(str(path), runner=trainer)
    assert seen[0] == {"0.1": False, "0.01": True, "1.0": False}
    assert all(f.exists() for f in flags.values())


def test_a_trial_is_recorded_with_its_flagfile_as_it_started(tmp_path):
    """A flagfile rewritten while its trial trains does not change what the record says ran."""
    (tmp_path / "c.cfg").write_text("--method=cfm\n--dropout_rate=0.3\n")
    config = _two_methods(tmp_path)
    del config["methods"]["baseline"], config["variants"]
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(config))
    fake = _fake_trainer([])

    def trainer(args):
        fake(args)
        (tmp_path / "c.cfg").write_text("--method=cfm\n--dropout_rate=0.5\n")

    tuning.run_tuning(str(path), runner=trainer)
    trials = [json.loads(line) for line in open(tmp_path / "out" / "trials.jsonl")]
    # The first trial started with 0.3 and the file said 0.5 when it ended; the second started
    # with 0.5.
    first, second = (t["train_config"]["dropout_rate"] for t in trials)
    assert (first, second) == (0.3, 0.5)
    # So the next sitting, reading 0.5, trains the first again instead of taking it for 0.5.
    calls = []
    fake = _fake_trainer(calls)
    tuning.run_tuning(str(path), runner=fake)
    assert [_flag(c, "alpha") for c in calls] == ["0.3"]


def test_a_method_is_tuned_only_at_the_fractions_it_names(tmp_path):
    """RFM is only in Table 4 (fraction 0.1): tuning it elsewhere would spend trials on runs
    the final tables never train."""
    config = {
        **_two_fractions(tmp_path),
        "common_flags": ["--validate_every=100"],
        "methods": {
            "baseline": {"flagfile": "configs/b.cfg"},
            "cfm": {"flagfile": "configs/c.cfg", "grid": GRID, "fractions": ["0.1"]},
        },
        "trials": 2,
    }
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(config))
    tuning.run_tuning(str(path), runner=_fake_trainer([]))
    trials = [json.loads(line) for line in open(tmp_path / "out" / "trials.jsonl")]
    assert sorted({(t["method"], t["fraction"]) for t in trials}) == [
        ("baseline", "0.1"),
        ("baseline", "1.0"),
        ("cfm", "0.1"),
    ]
    assert (tmp_path / "flags" / "toy_cfm_0.1.cfg").exists()
    assert not (tmp_path / "flags" / "toy_cfm_1.0.cfg").exists()


def test_a_trial_another_worker_holds_is_waited_for_then_taken_from_its_record(tmp_path):
    """Later trials may depend on it (backbone, promotion), so tuning does not pass it."""
    config = {
        **_toy_paths(tmp_path),
        "data_dirs": {"1.0": _fake_data_dir(tmp_path / "data")},
        "common_flags": ["--validate_every=100"],
        "methods": {"cfm": {"flagfile": "configs/c.cfg", "grid": {"alpha": [0.3, 1.0]}}},
        "trials": 2,
    }
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(config))
    typed = configs.tuning(config)
    held = tuning.unit(typed, "cfm", "1.0", {"alpha": 0.3})
    claim = workers.claim(workers.lock_path(typed.runs_dir, held.name))
    calls = []
    tuner = threading.Thread(target=tuning.run_tuning, args=(str(path), _fake_trainer(calls)))
    tuner.start()
    time.sleep(1)
    assert calls == [] and tuner.is_alive()  # waiting for the other worker's trial
    # The other worker trains it, records it and lets it go.
    _fake_trainer([])(list(held.train))
    book = ledger.RecordBook.of(str(tmp_path / "out" / "trials.jsonl"), "trial_id", typed.data_dirs)
    record = tuning._trial_record("cfm", "1.0", {"alpha": 0.3}, held.model_dir)
    atomic.write_jsonl(book.path, [ledger.stamp(record, book.key(held))])
    claim.close()
    tuner.join(timeout=60)
    assert [_flag(c, "alpha") for c in calls] == ["1.0"]
    trials = atomic.read_jsonl(book.path)
    assert [t["params"]["alpha"] for t in trials] == [0.3, 1.0]

"""What a record stands for (experimentation/keys.py, ledger.py): the key of a run's resolved
training config, parsed by absl; the committed records, converted once, recognised as done."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import pytest

from ssl_retrieval import config as config_lib
from ssl_retrieval.experimentation import configs, keys, ledger, runner, tuning
from ssl_retrieval.ranking.config import BlendConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(*flags):
    return ["python", "-m", "ssl_retrieval.train", "--data_dir=d", "--model_dir=m", *flags]


def _key(*flags, pairs=None, blend=True, evaluate=None):
    return keys.run_key(_train(*flags), "data", pairs, evaluate=evaluate, blend=blend)


def _record(*flags, **kwargs):
    return ledger.stamp({}, _key(*flags, **kwargs))


def _fields():
    return {f.name: f for f in dataclasses.fields(config_lib.TrainConfig)}


def test_the_command_is_parsed_as_train_parses_it(tmp_path):
    """Flagfiles (nested ones too), --noX and repeated flags, by absl itself."""
    (tmp_path / "common.cfg").write_text("# shared\n--batch_size=64\n--noshare_towers\n")
    (tmp_path / "cfm.cfg").write_text(f"--flagfile={tmp_path / 'common.cfg'}\n--method=cfm\n")
    config, _, _ = keys.parse_train(_train(f"--flagfile={tmp_path / 'cfm.cfg'}", "--alpha=0.1"))
    assert (config.batch_size, config.share_towers, config.method) == (64, False, "cfm")
    same = _key("--batch_size=64", "--share_towers=false", "--method=cfm", "--alpha=0.1")
    with_flagfile = keys.run_key(
        _train(f"--flagfile={tmp_path / 'cfm.cfg'}", "--alpha=0.1"), "data", None
    )
    assert with_flagfile == same
    assert _key("--alpha=0.3", "--alpha=0.1") == _key("--alpha=0.1")  # the last one wins
    assert _key("--alpha=0.1") != _key("--alpha=0.3")
    # Paths and what may change on resume are not what a run stands for.
    assert keys.run_key(_train("--log_every=7"), "data", None) == _key()
    assert keys.run_key(["python", "-m", "ssl_retrieval.train"], "data", None) == _key()
    for bad in ("--no_such_flag=1", "--flagfile=nowhere.cfg", "--method=nomethod"):
        with pytest.raises(ValueError):
            _key(bad)


def test_the_key_is_the_same_in_another_process():
    """What a fresh clone compares with the committed records: no address, no set order."""
    code = (
        "from ssl_retrieval.experimentation import keys; "
        "print(keys.run_key(['-m', 'ssl_retrieval.train', '--method=cfm'], 'd', None).train)"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (
        other.stdout.strip()
        == keys.run_key(["-m", keys.TRAIN_MODULE, "--method=cfm"], "d", None).train
    )


def test_a_new_default_voids_only_the_records_that_took_it(monkeypatch):
    """A new --mi_normalization default reruns the CFM runs that relied on it; not baseline's
    (it never reads it), nor a CFM run that sets it."""
    flags = {
        "cfm relying on it": ("--method=cfm",),
        "cfm setting it": ("--method=cfm", "--mi_normalization=min"),
        "baseline": ("--method=baseline",),
        "the default method (baseline)": (),
    }
    records = {name: _record(*f) for name, f in flags.items()}

    def reusable(name):
        return ledger.reusable(records[name], _key(*flags[name]))

    monkeypatch.setattr(_fields()["mi_normalization"], "default", "sqrt")
    assert {name: reusable(name) for name in flags} == {
        "cfm relying on it": False,
        "cfm setting it": True,
        "baseline": True,
        "the default method (baseline)": True,
    }
    # A default every method reads voids them all, but not a command that sets the flag.
    monkeypatch.setattr(_fields()["learning_rate"], "default", 0.5)
    assert not any(reusable(name) for name in flags)
    record = _record("--method=baseline", "--learning_rate=0.1")
    monkeypatch.setattr(_fields()["learning_rate"], "default", 0.7)
    assert ledger.reusable(record, _key("--method=baseline", "--learning_rate=0.1"))
    # A negated boolean flag sets its field too.
    negated = ("--nocfm_exclude_id", "--method=cfm", "--mi_normalization=min")
    record = _record(*negated)
    monkeypatch.setattr(_fields()["cfm_exclude_id"], "default", True)
    assert ledger.reusable(record, _key(*negated))


def _with_new_option(**option_kwargs):
    """TrainConfig as it would be with one more option, `new_option`."""
    from ssl_retrieval.cli import option

    @dataclasses.dataclass(frozen=True)
    class Extended(config_lib.TrainConfig):
        new_option: float = option(**option_kwargs)

    return Extended


def test_a_new_option_at_its_neutral_value_voids_no_record(monkeypatch):
    """Adding an option declared with the value that trains as before keeps every committed
    record; adding one without it, or with another default, voids them."""
    before = _record("--method=cfm")
    monkeypatch.setattr(config_lib, "TrainConfig", _with_new_option(default=0.0, neutral=0.0))
    assert ledger.reusable(before, _key("--method=cfm"))
    assert ledger.reusable(before, _key("--method=cfm", "--new_option=0"))  # set to it: the same
    assert not ledger.reusable(before, _key("--method=cfm", "--new_option=0.5"))
    monkeypatch.setattr(config_lib, "TrainConfig", _with_new_option(default=0.0))
    assert not ledger.reusable(before, _key("--method=cfm"))
    monkeypatch.setattr(config_lib, "TrainConfig", _with_new_option(default=0.9, neutral=0.0))
    assert not ledger.reusable(before, _key("--method=cfm"))


def test_the_blend_is_keyed_apart_and_only_where_the_record_was_measured_after_it(monkeypatch):
    """A run's record stands for its blend too; a trial's value is measured before the blend,
    so blend flags and defaults do not make it another trial."""
    run, trial = _record("--method=cfm"), _record("--method=cfm", blend=False)
    assert "blend" in run["key"] and "blend" not in trial["key"]
    for extra in ("--nochoose_popularity_prior", "--blend_margin=0.1", "--choose_popularity_prior"):
        assert ledger.reusable(trial, _key("--method=cfm", extra, blend=False))
    assert not ledger.reusable(trial, _key("--method=cfm", "--alpha=0.1", blend=False))
    changed = _key("--method=cfm", "--blend_margin=0.1")
    assert changed.train == run["key"]["train"] and changed.blend != run["key"]["blend"]
    assert not ledger.reusable(run, changed)
    blend_fields = {f.name: f for f in dataclasses.fields(BlendConfig)}
    monkeypatch.setattr(blend_fields["blend_margin"], "default", 0.5)
    assert not ledger.reusable(run, _key("--method=cfm"))
    assert ledger.reusable(trial, _key("--method=cfm", blend=False))
    # Without a blend the blend's grid and objective are never read.
    none = _record("--nochoose_popularity_prior")
    assert ledger.reusable(none, _key("--nochoose_popularity_prior", "--blend_margin=0.3"))
    assert not ledger.reusable(none, _key("--choose_popularity_prior"))


def test_the_evaluation_and_the_data_are_part_of_the_key():
    record = _record(evaluate={"ks": [10, 50]})
    assert ledger.reusable(record, _key(evaluate={"ks": [10, 50]}))
    assert not ledger.reusable(record, _key(evaluate={"ks": [10, 20]}))
    other_data = keys.run_key(_train(), "other", None, evaluate={"ks": [10, 50]})
    assert not ledger.reusable(record, other_data)
    assert not ledger.reusable(record, dataclasses.replace(_key(), data="missing"))
    assert not ledger.reusable({"run_id": "x"}, _key())  # no key: made before it, or unverified


def test_a_larger_budget_reruns_only_the_runs_it_bound():
    """A run that stopped early before its budget is the same run under any budget it does not
    reach; one that used its whole budget is not."""
    pairs = 1000  # 10 steps an epoch of batches of 100

    def record(steps, *flags, result=False):
        done = {"train": {"steps": steps}} if result else {"steps": steps}
        return ledger.stamp(done, _key("--batch_size=100", *flags, pairs=pairs))

    stopped = record(15, "--epochs=2")  # stopped early at 15 of 20 steps
    capped = record(20, "--epochs=2")  # used its 20 steps

    def reusable(rec, *flags, **kwargs):
        key = _key("--batch_size=100", *flags, pairs=kwargs.get("pairs", pairs))
        return ledger.reusable(rec, key)

    assert reusable(stopped, "--epochs=2") and reusable(capped, "--epochs=2")
    assert reusable(stopped, "--epochs=5") and not reusable(capped, "--epochs=5")
    assert reusable(stopped, "--train_steps=15") and not reusable(stopped, "--train_steps=14")
    assert reusable(stopped, "--epochs=2", "--epochs=1.5")  # the last one wins, as in absl
    assert not reusable(stopped, "--epochs=2", "--epochs=1.4")
    assert reusable(stopped)  # the default budget, 10 epochs
    # Final runs keep their steps under "train".
    assert reusable(record(15, "--epochs=2", result=True), "--epochs=5")
    # Only the budget may differ; and without the data's size, nothing but the same budget.
    assert not reusable(stopped, "--epochs=5", "--alpha=0.1")
    assert not reusable(stopped, "--epochs=5", pairs=None)
    assert reusable(stopped, "--epochs=2", pairs=None)
    assert not reusable(stopped, "--epochs=5", "--batch_size=50")
    # A run whose patience ran out at its budget's last step used it too.
    ran_out = ledger.stamp(
        {"steps": 20, "stopped_early": True},
        stopped_key := _key("--batch_size=100", "--epochs=2", pairs=pairs),
    )
    assert stopped_key.budget_steps == 20 and not reusable(ran_out, "--epochs=5")


def test_a_record_keeps_the_budget_it_was_resolved_with(monkeypatch):
    """A run that left --epochs to its default recorded that budget (10 epochs, 100 steps on
    1000 pairs): a new default changes the planned budget, not what the record stands for."""
    record = ledger.stamp({"steps": 50}, _key("--batch_size=100", pairs=1000))
    assert record["key"]["epochs"] == 10.0 and record["key"]["budget_steps"] == 100
    monkeypatch.setattr(_fields()["epochs"], "default", 6.0)
    assert ledger.reusable(record, _key("--batch_size=100", pairs=1000))  # 50 of 60 steps
    assert not ledger.reusable(record, _key("--batch_size=100", "--epochs=4", pairs=1000))


def test_a_planned_run_whose_command_does_not_parse_is_not_finished(tmp_path):
    book = ledger.RecordBook(str(tmp_path / "r.jsonl"), "run_id", {}, {"1.0": "data"}, {"1.0": 9})
    unit = ledger.Unit("a", "1.0", "m", tuple(_train("--flagfile=not_written_yet.cfg")))
    assert book.key(unit) is None and book.finished(unit) is None


def _data_dir(path, stats, counts="a\t3\nb\t1\n"):
    os.makedirs(path / "stats", exist_ok=True)
    (path / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    (path / "stats" / "candidate_counts.tsv").write_text(counts)
    return str(path)


def test_the_data_fingerprint_is_of_the_data_not_of_every_statistic(tmp_path):
    """Statistics added to stats.json after records were keyed (the reverse-link shares) keep the
    fingerprint, which is still the hash of the whole file as it was; other pairs change it."""
    then = {"num_items": 3, "num_train_pairs": 4, "head_fraction": 0.1, "files": {"x": "y"}}
    old = _data_dir(tmp_path / "old", then)
    digest = hashlib.sha256()  # what the fingerprint was: both files, whole
    for name in ("stats.json", os.path.join("stats", "candidate_counts.tsv")):
        digest.update(name.encode() + b"\0" + open(os.path.join(old, name), "rb").read())
    assert keys.data_fingerprint(old) == digest.hexdigest()[:16]
    now = {**then, "split_by": "pair", "eval_reverse_in_train_share": 0.2}
    assert keys.data_fingerprint(_data_dir(tmp_path / "now", now)) == digest.hexdigest()[:16]
    fewer_pairs = _data_dir(tmp_path / "fewer", {**now, "num_train_pairs": 3})
    other_counts = _data_dir(tmp_path / "other", now, counts="a\t2\nb\t1\n")
    assert len({keys.data_fingerprint(d) for d in (old, fewer_pairs, other_counts)}) == 3
    (tmp_path / "now" / "stats.json").write_text("{")
    assert keys.data_fingerprint(str(tmp_path / "now")) == "missing"


# The records committed with the campaign, and the configs that plan their runs.
EXPERIMENTS = ("debian", "debian_recipe", "linked_recipe", "synthetic_recipe", "linked_both_recipe")
COMPLETE = ("debian",)  # finished campaigns: every planned run recorded
TUNINGS = ("debian", "debian_mi")


def _book(path: str, name: str, data_dirs: dict) -> ledger.RecordBook:
    """The records of `path`, compared on the data dirs when they are here (this machine's
    runs/, or a link to it), else on the data the records name (a fresh clone without data)."""
    recorded = ledger.load(path, name)
    by_fraction = {r["fraction"]: r["key"]["data"] for r in recorded.values() if "key" in r}
    real = all(keys.data_fingerprint(d) != "missing" for d in data_dirs.values())
    if real:
        return ledger.RecordBook.of(path, name, data_dirs)
    return ledger.RecordBook(path, name, recorded, by_fraction, {f: None for f in data_dirs})


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_committed_final_run_is_recognised_as_done(monkeypatch, name):
    monkeypatch.chdir(ROOT)  # the configs' paths are relative to the checkout
    config = configs.load_experiment(f"configs/experiments/{name}.json")
    book = _book(os.path.join(config.output_dir, "results.jsonl"), "run_id", config.data_dirs)
    planned = {run.run_id: run for run in runner.plan(config)}
    # A campaign under way commits the runs it has: each must stand for its planned run.
    assert set(book.recorded) <= set(planned)
    undone = [
        name for name in book.recorded if book.finished(runner.unit(config, planned[name])) is None
    ]
    assert undone == []
    states = dict((run.run_id, state) for run, state in runner.status(config, book))
    assert all(states[name] == "recorded" for name in book.recorded)
    if name in COMPLETE:
        assert len(book.recorded) == len(planned)


@pytest.mark.parametrize("name", TUNINGS)
def test_every_committed_trial_is_recognised_as_done(monkeypatch, name):
    monkeypatch.chdir(ROOT)
    config = configs.load_tuning(f"configs/tuning/{name}.json")
    book = _book(os.path.join(config.output_dir, "trials.jsonl"), "trial_id", config.data_dirs)
    every = {(m, f) for f in config.data_dirs for m in tuning.methods_at(config, f)}
    assert tuning._decided(config, book) == every
    trials = list(book.recorded.values())
    assert len(tuning.plan(config, trials)) == len(trials)

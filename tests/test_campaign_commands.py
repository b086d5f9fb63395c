"""`python -m ssl_retrieval.experiments` and `tune`: flags from their dataclasses, end to end.

Each command runs in a subprocess: both define `--config` and `--dry_run` on absl's global flags,
so they cannot be imported into one process.
"""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from absl import flags

from ssl_retrieval import cli
from ssl_retrieval.experimentation import configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("cls", [configs.ExperimentsOptions, configs.TuneOptions])
def test_the_commands_flags_are_their_dataclasses_fields(cls):
    values = flags.FlagValues()
    holders = cli.define_flags(cls, flag_values=values)
    values(["prog", "--config=c.json"])
    assert set(holders) == {f.name for f in dataclasses.fields(cls)}
    options = cli.from_flags(cls, holders)
    assert options.config == "c.json" and options.dry_run is False


def test_list_flags_become_tuples():
    values = flags.FlagValues()
    holders = cli.define_flags(configs.ExperimentsOptions, flag_values=values)
    values(["prog", "--config=c.json", "--fractions=0.01,0.1", "--nodry_run"])
    options = cli.from_flags(configs.ExperimentsOptions, holders)
    assert options.fractions == ("0.01", "0.1") and options.methods is None


def _command(cwd, module, *args):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_both_commands_list_their_plans_and_name_a_bad_field(tmp_path):
    (tmp_path / "b.cfg").write_text("--method=baseline\n")
    experiment = {
        "output_dir": "out",
        "runs_dir": "runs",
        "data_dirs": {"1.0": "data"},
        "methods": {"baseline": "b.cfg", "cfm": "c.cfg"},
        "seeds": [0, 1],
        "tables": {"main": {"methods": ["baseline", "cfm"], "fractions": ["1.0"]}},
    }
    (tmp_path / "e.json").write_text(json.dumps(experiment))
    done = _command(tmp_path, "ssl_retrieval.experiments", "--config=e.json", "--dry_run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:4] == [
        "1.0/baseline/seed0  to run",
        "1.0/cfm/seed0  waits for c.cfg",
        "1.0/baseline/seed1  to run",
        "1.0/cfm/seed1  waits for c.cfg",
    ]
    tuning = {
        "name": "t",
        "output_dir": "out",
        "runs_dir": "runs",
        "flagfile_dir": "flags",
        "data_dirs": {"1.0": "data"},
        "methods": {"baseline": {"flagfile": "b.cfg", "grid": {"alpha": [0.3, 1]}}},
    }
    (tmp_path / "t.json").write_text(json.dumps(tuning))
    done = _command(tmp_path, "ssl_retrieval.tune", "--config=t.json", "--dry_run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1.0/baseline/alpha=0.3", "1.0/baseline/alpha=1"]
    tuning["trials"] = "2"
    (tmp_path / "t.json").write_text(json.dumps(tuning))
    done = _command(tmp_path, "ssl_retrieval.tune", "--config=t.json", "--dry_run")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        'error: t.json: trials: expected an integer, got "2"'
    )
    done = _command(tmp_path, "ssl_retrieval.experiments", "--dry_run")
    assert done.returncode == 1 and "--config" in done.stderr  # required

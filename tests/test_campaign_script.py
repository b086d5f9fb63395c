"""scripts/debian_experiments.sh: the order of its steps, alone and with --parallel, run with a
stand-in interpreter that records each command instead of training."""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "debian_experiments.sh")

TUNE = "-m ssl_retrieval.tune --config=configs/tuning/debian.json"
MI = "-m ssl_retrieval.tune --config=configs/tuning/debian_mi.json"
SHORT = "-m ssl_retrieval.experiments --config=configs/experiments/debian.json --fractions=0.01,0.1"
ALL = "-m ssl_retrieval.experiments --config=configs/experiments/debian.json"


def _campaign(tmp_path, *args, tune_exit=0):
    """Runs the script in a directory whose data dirs exist; returns its process and the
    commands it ran, as (event, command) in order, "start"/"end" around the tuning."""
    for name in ("raw", "data", "data_0.1", "data_0.01"):
        os.makedirs(tmp_path / "runs" / "debian" / name)
        (tmp_path / "runs" / "debian" / name / "schema.json").write_text("{}")
    calls = tmp_path / "calls"
    fake = tmp_path / "python"
    # The tuning lasts long enough for several passes of final runs beside it.
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$*" = "{TUNE}" ]; then\n'
        f'  echo "start $*" >> {calls}; sleep 1.5; echo "end $*" >> {calls}; exit {tune_exit}\n'
        "fi\n"
        f'echo "run $*" >> {calls}\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "PY": str(fake), "PASS_PAUSE": "0.2"}
    process = subprocess.run(
        ["bash", SCRIPT, *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return process, [tuple(line.split(" ", 1)) for line in lines]


def test_one_step_after_the_other(tmp_path):
    process, calls = _campaign(tmp_path)
    assert process.returncode == 0, process.stderr
    assert calls == [("start", TUNE), ("end", TUNE), ("run", SHORT), ("run", MI), ("run", ALL)]


def test_parallel_runs_short_fractions_beside_the_tuning_then_the_rest(tmp_path):
    process, calls = _campaign(tmp_path, "--parallel")
    assert process.returncode == 0, process.stderr
    end = calls.index(("end", TUNE))
    beside = calls[:end]
    # Passes of final runs went on while the tuning ran (it lasts 1.5 s, a pass pauses 0.2 s).
    assert beside.count(("run", SHORT)) >= 2
    assert set(beside) == {("start", TUNE), ("run", SHORT)}
    # Once it ended: a last pass at the short fractions (their last flagfiles), the MI check,
    # then everything.
    assert calls[-3:] == [("run", SHORT), ("run", MI), ("run", ALL)]


def test_parallel_stops_when_the_tuning_fails(tmp_path):
    process, calls = _campaign(tmp_path, "--parallel", tune_exit=3)
    assert process.returncode == 1
    assert "tuning failed" in process.stderr
    assert ("run", MI) not in calls and ("run", ALL) not in calls


@pytest.mark.parametrize("argument", ["--paralel", "parallel"])
def test_an_unknown_argument_is_refused(tmp_path, argument):
    process, calls = _campaign(tmp_path, argument)
    assert process.returncode == 2
    assert "usage" in process.stderr
    assert calls == []

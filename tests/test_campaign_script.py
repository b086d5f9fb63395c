"""scripts/debian_experiments.sh: the order of its steps, alone and with --parallel, run with a
stand-in interpreter that records each command instead of training."""

import os
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "debian_experiments.sh")

TUNE = "-m ssl_retrieval.tune --config=configs/tuning/debian.json"
MI = "-m ssl_retrieval.tune --config=configs/tuning/debian_mi.json"
SHORT = "-m ssl_retrieval.experiments --config=configs/experiments/debian.json --fractions=0.01,0.1"
ALL = "-m ssl_retrieval.experiments --config=configs/experiments/debian.json"


def _campaign(tmp_path, *args, tune_exit=0, short_exit=0, all_exit=0, passes_beside=2):
    """Runs the script in a directory whose data dirs exist; returns its process and the
    commands it ran, as (event, command) in order, "start"/"end" around the tuning."""
    for name in ("raw", "data", "data_0.1", "data_0.01"):
        os.makedirs(tmp_path / "runs" / "debian" / name)
        (tmp_path / "runs" / "debian" / name / "schema.json").write_text("{}")
    calls = tmp_path / "calls"
    fake = tmp_path / "python"
    # The tuning starts a child (its training run) and records its pid, then lasts until two
    # passes of final runs have started beside it (at most 20 s, in case none ever does).
    child = tmp_path / "child"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$*" = "{TUNE}" ]; then\n'
        f'  echo "start $*" >> {calls}; sleep 30 & echo $! > {child}.new; mv {child}.new {child}\n'
        f'  for i in $(seq 200); do [ "$(grep -c "^run {SHORT}$" {calls})" -ge {passes_beside} ] '
        "&& break\n"
        "    sleep 0.1; done\n"
        f'  kill $!; echo "end $*" >> {calls}; exit {tune_exit}\n'
        "fi\n"
        f'echo "run $*" >> {calls}\n'
        # A failing pass fails once the tuning's child is running.
        f'if [ "$*" = "{SHORT}" ] && [ {short_exit} != 0 ]; then\n'
        f"  until [ -f {child} ]; do sleep 0.1; done; exit {short_exit}\n"
        "fi\n"
        # The second worker (in the background: its output goes to a log) fails.
        f'if [ "$*" = "{ALL}" ] && [ ! -t 1 ] && [ -n "$(readlink /proc/$$/fd/1 | grep worker2)" ]; '
        f"then exit {all_exit}; fi\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PY": str(fake), "PASS_PAUSE": "0.2"}
    process = subprocess.run(
        ["bash", SCRIPT, *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return process, [tuple(line.split(" ", 1)) for line in lines]


def test_one_step_after_the_other(tmp_path):
    process, calls = _campaign(tmp_path, passes_beside=0)
    assert process.returncode == 0, process.stderr
    assert calls == [("start", TUNE), ("end", TUNE), ("run", SHORT), ("run", MI), ("run", ALL)]


def test_parallel_runs_short_fractions_beside_the_tuning_then_the_rest(tmp_path):
    process, calls = _campaign(tmp_path, "--parallel")
    assert process.returncode == 0, process.stderr
    end = calls.index(("end", TUNE))
    beside = calls[:end]
    # Passes of final runs went on while the tuning ran (it waits for two of them).
    assert beside.count(("run", SHORT)) >= 2
    assert set(beside) == {("start", TUNE), ("run", SHORT)}
    # Once it ended: a last pass at the short fractions (their last flagfiles), the MI check,
    # then everything on two workers.
    assert calls[-4:] == [("run", SHORT), ("run", MI), ("run", ALL), ("run", ALL)]


def test_parallel_fails_when_the_second_worker_fails(tmp_path):
    process, calls = _campaign(tmp_path, "--parallel", all_exit=4)
    assert process.returncode == 1
    assert "the second worker failed" in process.stderr
    assert calls.count(("run", ALL)) == 2


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


def test_parallel_stops_the_tuning_and_its_training_when_a_pass_fails(tmp_path):
    process, calls = _campaign(tmp_path, "--parallel", short_exit=1)
    assert process.returncode == 1
    assert ("end", TUNE) not in calls  # stopped, not finished
    child = int((tmp_path / "child").read_text())
    deadline = time.monotonic() + 10  # a signal is delivered, not awaited, by kill
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie, killed but not reaped by its new parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

"""Quiet commands (issue 34.2): their own progress at INFO, the libraries' warnings, -v for all."""

import logging
import os
import re
import signal
import subprocess
import sys

import pytest

from ssl_retrieval import logs, testing
from ssl_retrieval.sources import linked

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the libraries printed before: absl's prefix with a thread id, Beam's type hints, Beam's
# BigQuery import, TensorFlow's CUDA probe and savers, ScaNN's and MLIR's absl C++ lines.
NOISE = re.compile(
    r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ |Converting string literal|apitools|cuInit|"
    r"Sharding callback|Restoring parameters|absl::InitializeLog|^INFO:|statecache"
)
OWN_LINE = re.compile(r"^[IWE] \d\d:\d\d:\d\d \w+: ")


def run(args, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=env,
        **kwargs,
    )


def lines_of(proc):
    return (proc.stdout + proc.stderr).splitlines()


@pytest.fixture(scope="module")
def raw_200(tmp_path_factory):
    directory = tmp_path_factory.mktemp("raw") / "raw"
    linked.build(str(directory), num_items=200, num_pairs=800, seed=0)
    return directory


def preprocess_args(raw, out, *extra):
    return [
        "pipelines.preprocess",
        f"--items={raw}/items.jsonl",
        f"--pairs={raw}/pairs.jsonl",
        f"--schema={raw}/schema.json",
        f"--output_dir={out}",
        *extra,
    ]


@pytest.mark.slow
def test_preprocessing_200_items_prints_at_most_15_lines(raw_200, tmp_path):
    proc = run(preprocess_args(raw_200, tmp_path / "data"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = lines_of(proc)
    assert len(lines) <= 15, "\n".join(lines)
    assert [line for line in lines if NOISE.search(line)] == []
    assert all(OWN_LINE.match(line) for line in proc.stderr.splitlines()), proc.stderr
    assert proc.stdout.startswith("preprocess: 200 items")
    # Beam's workers in other processes are as quiet.
    workers = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    proc = run(preprocess_args(raw_200, tmp_path / "mp", *workers))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(lines_of(proc)) <= 15, proc.stderr
    assert [line for line in lines_of(proc) if NOISE.search(line)] == []


@pytest.mark.slow
def test_verbosity_1_shows_the_libraries_logs(raw_200, tmp_path):
    proc = run(preprocess_args(raw_200, tmp_path / "data", "--verbosity=1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Converting string literal type hint to Any" in proc.stderr
    assert len(lines_of(proc)) > 30
    quiet = run(preprocess_args(raw_200, tmp_path / "quiet", "--verbosity=-1"))
    assert quiet.returncode == 0 and quiet.stderr.splitlines() == [
        line for line in quiet.stderr.splitlines() if line.startswith("W ")
    ]


@pytest.mark.slow
def test_train_on_tiny_data_prints_its_progress_and_no_library_noise(tmp_path):
    data_dir = testing.make_data_dir(str(tmp_path / "data"), validation_fraction=0.1)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = run(
        [
            "ssl_retrieval.train",
            f"--data_dir={data_dir}",
            f"--model_dir={tmp_path / 'model'}",
            "--train_steps=20",
            "--batch_size=32",
            "--log_every=10",
            "--validate_every=10",
            "--checkpoint_every=10",
        ],
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = lines_of(proc)
    noise = [line for line in lines if NOISE.search(line)]
    if logs.has_nvidia_device():  # then the CUDA probe is no noise
        noise = [line for line in noise if "cuInit" not in line]
    assert noise == []
    assert sum("train: step" in line for line in lines) >= 2
    assert all(OWN_LINE.match(line) for line in proc.stderr.splitlines()), proc.stderr
    assert proc.stdout.startswith("train: 20 steps")
    # Run again, finished: one line saying so, not a warning per table left unrestored.
    again = run(proc.args[proc.args.index("-m") + 1 :], env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished" in again.stdout
    assert [line for line in lines_of(again) if line.startswith("W ")] == []


CRASH = """
import os, signal, sys
from ssl_retrieval import logs
native = logs.NativeFilter(logs._native_drop_pattern())
native.start()
print("python line", file=sys.stderr, flush=True)
os.write(2, b"I0000 00:00:1796531832.757204    2723 partitioner_factory_base.cc:58] chatter\\n")
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written\\n")
os.write(2, b"INFO:apache_beam.runners.worker.sdk_worker:Control channel established.\\n")
os.write(2, b"E0000 00:00:1796531832.757535    2723 gmm_utils.cc:1026] a real error\\n")
os.write(2, b"F0000 00:00:1796531832.757535    2723 x.cc:1] Check failed: the last words\\n")
if sys.argv[1] == "crash":
    os.kill(os.getpid(), signal.SIGKILL)
native.stop()
print("after", file=sys.stderr, flush=True)
"""


@pytest.mark.parametrize("ending", ["stop", "crash"])
def test_native_filter_drops_chatter_and_keeps_errors_even_after_a_crash(ending):
    proc = subprocess.run(
        [sys.executable, "-c", CRASH, ending], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    expected = [
        "python line",
        "E0000 00:00:1796531832.757535    2723 gmm_utils.cc:1026] a real error",
        "F0000 00:00:1796531832.757535    2723 x.cc:1] Check failed: the last words",
    ]
    if ending == "crash":
        assert proc.returncode == -signal.SIGKILL
    else:
        expected.append("after")
    # The Python line bypasses the filter: it may come before or after the native ones.
    assert sorted(proc.stderr.splitlines()) == sorted(expected)


def _record(name, level, pathname, msg="message"):
    return logging.LogRecord(name, level, pathname, 1, msg, None, None)


def test_own_records_from_info_and_the_libraries_from_warning():
    own = os.path.join(ROOT, "pipelines", "pipeline.py")
    quiet = logs._Quiet(logging.INFO)
    cases = [
        (_record("root", logging.INFO, own, "preprocess: wrote x"), True),
        (_record("root", logging.DEBUG, own), False),
        (_record("ssl_retrieval.serving", logging.INFO, "/x/y.py"), True),
        (_record("root", logging.INFO, "/site-packages/tensorflow/saver.py"), False),
        (_record("apache_beam.typehints", logging.INFO, "/site-packages/a.py"), False),
        (_record("tensorflow", logging.WARNING, "/site-packages/t.py"), True),
        (
            _record("root", logging.WARNING, "/b/apache_beam/bq.py", "apitools not found, ..."),
            False,
        ),
    ]
    assert [quiet.filter(record) for record, _ in cases] == [shown for _, shown in cases]
    assert logs._Quiet(logging.WARNING).filter(cases[0][0]) is False
    text = logs._Plain().format(_record("root", logging.INFO, own, "train: step 1"))
    assert re.fullmatch(r"I \d\d:\d\d:\d\d train: step 1", text)
    text = logs._Plain().format(_record("tensorflow", logging.WARNING, "/t.py", "careful"))
    assert re.fullmatch(r"W \d\d:\d\d:\d\d tensorflow: careful", text)


def test_importing_the_package_sets_tensorflows_log_level_unless_the_user_did():
    code = "import os, ssl_retrieval; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "2"
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "0"

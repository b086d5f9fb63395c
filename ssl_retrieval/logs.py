"""How every command logs: its own progress at INFO, the libraries' warnings and errors only.

The libraries under the commands talk a lot. In Python: Beam's "Converting string literal type
hint to Any" (dozens of times a job) and its state cache, TensorFlow's "Restoring parameters"
and "Sharding callback duration", all in absl's format with thread ids. Beneath Python, in C++:
ScaNN's partitioner and TensorFlow's MLIR passes (absl's C++ log format, which no environment
variable quiets) and TensorFlow's CUDA probe on a machine without a GPU ("failed call to
cuInit", an error line). So a command (`cli.main`) shows:

- its own records (the modules of `ssl_retrieval` and `pipelines`) from INFO, as
  `I 12:03:04 train: step 10/60 ...`;
- every library's records from WARNING, as `W 12:03:04 apache_beam.io: ...`;
- native lines written to stderr, except absl's C++ INFO and WARNING lines, its "All log
  messages before absl::InitializeLog()" banner, the CUDA probe's failure when the machine
  has no NVIDIA device, and the INFO lines of subprocesses that log in Python's default format
  (Beam's workers with `--direct_running_mode=multi_processing`) (`NativeFilter`);
- none of `KNOWN_NOISE`: warnings libraries give on every run that say nothing about it.

`--verbosity=1` (`-v 1`, absl's flag) shows everything: every logger from DEBUG, every native
line, and TensorFlow's C++ INFO lines (when TF_CPP_MIN_LOG_LEVEL was not set by the user and
TensorFlow is imported after the flags are parsed, as every command does). `--verbosity=-1`
shows warnings and errors only, the command's own included.

`library_defaults()` runs when the package is imported, before TensorFlow or Beam can be: it sets
TF_CPP_MIN_LOG_LEVEL=2 unless the user set it, and drops the one warning Beam logs while it is
imported ("apitools not found": Google Cloud clients that only `--input_format=bigquery` needs).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import subprocess
import sys

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# The modules whose INFO records a command shows: this package's and the Beam job's (its sibling).
OWN_DIRS = (
    _PACKAGE_DIR + os.sep,
    os.path.join(os.path.dirname(_PACKAGE_DIR), "pipelines") + os.sep,
)
OWN_LOGGERS = ("ssl_retrieval", "pipelines", "__main__")
# Warnings libraries give on every run that say nothing about it: Beam's import of its BigQuery
# clients (logged while Beam is imported, before a command can set its logging up) and its
# multi-processing workers' start.
KNOWN_NOISE = ("apitools not found", "No semi_persistent_directory found")
TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
_user_set_tf_log_level: bool | None = None


def _is_noise(record: logging.LogRecord) -> bool:
    text = str(record.msg)
    return any(noise in text for noise in KNOWN_NOISE)


class _ImportNoise(logging.Filter):
    def filter(self, record):
        return not _is_noise(record)


def library_defaults() -> None:
    """TensorFlow's C++ log level (2: warnings and info hidden) unless the user set it, and the
    root logger's filter of `KNOWN_NOISE`. Idempotent; called by `ssl_retrieval/__init__.py`."""
    global _user_set_tf_log_level
    if _user_set_tf_log_level is None:
        _user_set_tf_log_level = TF_LOG_LEVEL in os.environ
    os.environ.setdefault(TF_LOG_LEVEL, "2")
    root = logging.getLogger()
    if not any(isinstance(f, _ImportNoise) for f in root.filters):
        root.addFilter(_ImportNoise())
        from absl import app  # noqa: PLC0415  (absl's app only, no flags defined)

        app.call_after_init(_list_gpus_quietly)


def _list_gpus_quietly() -> None:
    """A command that imports TensorFlow before `app.run` (evaluate, through the peers' options)
    gets TensorFlow's own init callback (tensorflow/python/distribute/combinations.py), which
    lists the GPUs after the flags are parsed and before `command_logging` filters native
    stderr: its "failed call to cuInit" would show. Registered before it, this lists them first
    through the filter; TensorFlow keeps the list, so its callback prints nothing."""
    from absl import flags  # noqa: PLC0415

    verbosity = flags.FLAGS["verbosity"].value if "verbosity" in flags.FLAGS else 0
    if "tensorflow" not in sys.modules or verbosity >= 1 or not _filters_native_stderr():
        return
    native = NativeFilter(_native_drop_pattern())
    native.start()
    try:
        sys.modules["tensorflow"].config.list_physical_devices("GPU")
    finally:
        native.stop()


def is_own(record: logging.LogRecord) -> bool:
    """Whether a record comes from this project's code (which logs through the root logger)."""
    if record.name.split(".")[0] in OWN_LOGGERS:
        return True
    return record.name == "root" and os.path.abspath(record.pathname).startswith(OWN_DIRS)


class _Quiet(logging.Filter):
    """Passes the command's own records from `own_level` and the libraries' from WARNING."""

    def __init__(self, own_level: int):
        super().__init__()
        self.own_level = own_level

    def filter(self, record):
        if is_own(record):
            return record.levelno >= self.own_level
        return record.levelno >= logging.WARNING and not _is_noise(record)


class _Plain(logging.Formatter):
    """`I 12:03:04 message`, and the logger's name before a library's message."""

    def __init__(self):
        super().__init__("%(letter)s %(asctime)s %(origin)s%(message)s", "%H:%M:%S")

    def format(self, record):
        record.letter = record.levelname[:1]
        record.origin = "" if is_own(record) else f"{record.name}: "
        return super().format(record)


def _configure_handler(verbosity: int, own_level: int) -> None:
    """The format and filter of absl's handler, which `app.run` puts on the root logger; other
    handlers (a test's capture, a notebook's) are left as they are."""
    from absl import logging as absl_logging  # noqa: PLC0415  (only commands need it)

    handler = absl_logging.get_absl_handler()
    if handler not in logging.getLogger().handlers:
        return
    handler.setFormatter(_Plain())
    for old in [f for f in handler.filters if isinstance(f, _Quiet)]:
        handler.removeFilter(old)
    if verbosity <= 0:
        handler.addFilter(_Quiet(own_level))


def has_nvidia_device() -> bool:
    return bool(glob.glob("/dev/nvidia[0-9]*"))


# absl's C++ format: "I0000 00:00:1796531832.757204    2723 partitioner_factory_base.cc:58] ...".
_ABSL_INFO_OR_WARNING = rb"[IW]\d{4} [\d:.]+ +\d+ [^\]\n]+\] "
_ABSL_BANNER = rb"WARNING: All log messages before absl::InitializeLog\(\) is called"
_NO_GPU_PROBE = rb".*failed call to cuInit"
_PYTHON_DEFAULT_FORMAT_INFO = rb"(?:INFO|DEBUG):"
# The filter process: stdin to stdout line by line, dropping lines that match argv[1]. It ignores
# SIGINT and reads to the end, so nothing written before a crash of the command is lost.
_FILTER_CODE = """
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
drop = re.compile(sys.argv[1].encode())
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    if not drop.match(line):
        out.write(line)
        out.flush()
"""


class NativeFilter:
    """Native (C/C++) writes to stderr through a filter process that drops library chatter.

    Python's own writes keep going straight to the terminal (`sys.stderr` becomes a copy of the
    original stream), so progress bars and log lines are not delayed; file descriptor 2, where
    native code writes, becomes a pipe to the filter. Subprocesses inherit the pipe.
    """

    def __init__(self, drop_pattern: bytes):
        self._pattern = drop_pattern
        self._saved_fd = None
        self._process = None
        self._stderr = None

    def start(self) -> None:
        """Routes file descriptor 2 through the filter (nothing changes if it cannot start)."""
        sys.stderr.flush()
        self._saved_fd = os.dup(2)
        read_end, write_end = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-S", "-c", _FILTER_CODE, self._pattern.decode()],
                stdin=read_end,
                stdout=self._saved_fd,
            )
        except OSError:
            for fd in (read_end, write_end, self._saved_fd):
                os.close(fd)
            return
        os.close(read_end)
        os.dup2(write_end, 2)
        os.close(write_end)
        self._stderr = sys.stderr
        sys.stderr = open(  # noqa: SIM115  (closed by stop)
            os.dup(self._saved_fd), "w", buffering=1, encoding="utf-8", errors="backslashreplace"
        )

    def stop(self) -> None:
        """Puts stderr back and waits for the filter to pass on what it has."""
        if self._process is None:
            return
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = self._stderr
        os.dup2(self._saved_fd, 2)  # closes the pipe's last write end in this process
        os.close(self._saved_fd)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a subprocess still holds the pipe: leave it be
            pass
        self._process = None


def _native_drop_pattern() -> bytes:
    patterns = [_ABSL_INFO_OR_WARNING, _ABSL_BANNER, _PYTHON_DEFAULT_FORMAT_INFO]
    patterns += [b".*" + re.escape(noise).encode() for noise in KNOWN_NOISE]
    if not has_nvidia_device():
        patterns.append(_NO_GPU_PROBE)
    return b"|".join(b"(?:" + p + b")" for p in patterns)


def _filters_native_stderr() -> bool:
    """Only for a command writing to its own stderr: not under a test's capture of sys.stderr."""
    try:
        return sys.stderr is sys.__stderr__ and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def command_logging(verbosity: int = 0, own_level: int = logging.INFO):
    """Logging of one command while its body runs (see the module docstring).

    Args:
      verbosity: absl's --verbosity: <= 0 quiet libraries, >= 1 everything.
      own_level: the lowest level of the command's own records shown (with verbosity 0).
    """
    _configure_handler(verbosity, own_level)
    native = None
    if verbosity >= 1:
        if not _user_set_tf_log_level and "tensorflow" not in sys.modules:
            os.environ[TF_LOG_LEVEL] = "0"
    elif _filters_native_stderr():
        native = NativeFilter(_native_drop_pattern())
        native.start()
    try:
        yield
    finally:
        if native is not None:
            native.stop()

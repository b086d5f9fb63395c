"""Runs the train and evaluate commands of the experiments and the tuning, one subprocess each.

The experiment runners own their model dirs: a run's dir is named by its place in the plan, not
by its command. So when a command changes between sittings (a flagfile edited, a default of the
package changed) the dir of a run that had not finished holds a run of another config, which
train refuses to resume (`config.ChangedRunError`). Stopping the campaign there would wait for
a person to delete it; resuming it would mix two configs. `train` sets the old run aside, beside
its dir as `<dir>.replaced-<UTC time>` (nothing is deleted), and trains the command afresh.
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import time
from collections.abc import Callable

from ssl_retrieval import config as config_lib
from ssl_retrieval.experimentation import workers


class ChangedRun(RuntimeError):
    """A train command's model dir holds a run of another config."""


def run_subprocess(args: list[str]) -> None:
    """Runs a command; raises ChangedRun or RuntimeError (with its stderr's end) on failure."""
    # The worker's claims go with it (workers.Claim): they last while the subprocess runs.
    result = subprocess.run(args, capture_output=True, text=True, pass_fds=workers.held_fds())
    if result.returncode == 0:
        return
    error = (
        ChangedRun if result.returncode == config_lib.ChangedRunError.exit_status else RuntimeError
    )
    raise error(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")


def train(runner: Callable[[list[str]], None], command: list[str], model_dir: str) -> float | None:
    """Runs a train command; when its model dir holds a run of another config, moves that run
    aside and trains again. Returns when (`time.monotonic()`) the run started from nothing, so
    that its wall time is the whole run's, or None when it went on from a run begun before."""
    started = None if os.path.exists(os.path.join(model_dir, "config.json")) else time.monotonic()
    try:
        runner(command)
        return started
    except ChangedRun as e:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%f")
        aside = f"{model_dir.rstrip('/')}.replaced-{now}"
        os.rename(model_dir, aside)
        reason = str(e).strip().splitlines()[-1]
        logging.warning("%s; moved the old run to %s and training afresh", reason, aside)
    started = time.monotonic()
    runner(command)
    return started

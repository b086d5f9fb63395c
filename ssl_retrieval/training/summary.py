"""A run's summary, `<model_dir>/train_metrics.json`: what `trainer.run` returns.

It is written last, so it marks a finished run: a rerun of the same command finds it and does
nothing (or chooses the blend again). Given another step budget, a finished run is the same run
when the budget never bound it (early stopping ended it before); one that used its whole budget
is reopened (`reopen_for_budget` removes the summary) and resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os

from ssl_retrieval import atomic
from ssl_retrieval import config as config_lib
from ssl_retrieval.training import checkpoints
from ssl_retrieval.training.progress import Progress

FILE = "train_metrics.json"


def finished(model_dir: str) -> bool:
    """The run in `model_dir` has finished (it wrote its summary)."""
    return os.path.exists(os.path.join(model_dir, FILE))


def read(model_dir: str, steps: int) -> dict:
    """The finished run's summary; {"steps": steps} when there is none."""
    path = os.path.join(model_dir, FILE)
    if not os.path.exists(path):
        return {"steps": steps}
    with open(path) as f:
        return json.load(f)


def write(model_dir: str, summary: dict) -> None:
    atomic.write_json(os.path.join(model_dir, FILE), summary, sort_keys=False, newline=False)


def make(
    config: config_lib.TrainConfig,
    progress: Progress,
    start_step: int,
    losses: tuple[float, float, float],
    best: dict,
) -> dict:
    """The summary of a run that trained from `start_step` to `progress.step`.

    Args:
      config: the run's config.
      progress: where the loop ended.
      start_step: the step it resumed from (0: a fresh run).
      losses: the last (total, main, auxiliary) losses logged.
      best: the best validation's fields (`ModelSelection.best()`).
    """
    return {
        "steps": progress.step,
        "max_steps": progress.steps,
        "stopped_early": progress.stop,
        "resumed_from_step": start_step,
        "final_loss": losses[0],
        "final_main_loss": losses[1],
        "final_auxiliary_loss": losses[2],
        "examples_per_second": (progress.steps - start_step)
        * config.batch_size
        / max(progress.seconds, 1e-9),
        "seconds": progress.seconds,
        "method": config.method,
        **best,
    }


def reopen_for_budget(config: config_lib.TrainConfig, steps: int) -> None:
    """A run given another step budget (`steps`): the same run when the budget never bound it;
    a finished run that used its whole budget is reopened to train on up to the new one.

    Raises:
      ValueError: the run has trained more steps than `steps`.
    """
    summary = read(config.model_dir, steps) if finished(config.model_dir) else {}
    trained = summary.get("steps") or checkpoints.latest_step(config.model_dir)
    if trained > steps:
        raise ValueError(
            f"{config.model_dir} has trained {trained} steps, more than the {steps} its new "
            "--epochs/--train_steps allow; use another --model_dir, or --overwrite"
        )
    used_budget = config_lib.used_whole_budget(
        summary.get("steps"), summary.get("max_steps"), summary.get("stopped_early")
    )
    # Unknown (a summary from before early stopping): it trained to its budget.
    if summary and used_budget is not False and trained < steps:
        logging.info(
            "train: %s used its budget of %d steps; going on to %d",
            config.model_dir,
            trained,
            steps,
        )
        os.remove(os.path.join(config.model_dir, FILE))  # unfinished: it resumes

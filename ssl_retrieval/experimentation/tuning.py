"""Tuning each method's hyperparameters on the validation split, the same budget for each.

The library behind `python -m ssl_retrieval.tune` (see that module for the config format): the
seeded trial plan, one training subprocess per trial, choosing on validation, the flagfiles.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np

from ssl_retrieval import atomic
from ssl_retrieval import config as config_lib
from ssl_retrieval.experimentation import ledger

METRIC = "best_validation_recall@50"
# A trial's value is the best validation Recall@50 during training: how the blend is chosen
# after training does not change it, so new blend defaults do not rerun trials.
NOT_IN_TRIALS = config_lib.BLEND_FIELDS


def trial_points(grid: dict[str, list], trials: int, seed: int) -> list[dict]:
    """`trials` distinct points of the grid (all of it when smaller), in a seeded random order.

    The first point is always the grid's first value of every flag, so listing a method's
    current defaults first guarantees they are among the trials.
    """
    names = sorted(grid)
    points = [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(grid[n] for n in names))
    ]
    if not points:
        return [{}]
    first, rest = points[0], points[1:]
    order = np.random.default_rng(seed).permutation(len(rest))
    return [first] + [rest[i] for i in order[: max(0, trials - 1)]]


def trial_id(method: str, fraction: str, point: dict) -> str:
    suffix = ",".join(f"{k}={point[k]}" for k in sorted(point)) or "defaults"
    return f"{fraction}/{method}/{suffix}"


def plan(config: dict) -> list[tuple[str, str, dict]]:
    """(method, fraction, point) of every trial; fractions outermost, so short ones come first
    when the config lists them first."""
    out = []
    for fraction in config["data_dirs"]:
        for method, spec in config["methods"].items():
            for point in trial_points(
                spec.get("grid", {}), config.get("trials", 8), config.get("seed", 0)
            ):
                out.append((method, fraction, point))
    return out


def train_command(config: dict, method: str, fraction: str, point: dict) -> tuple[list, str]:
    model_dir = os.path.join(config["runs_dir"], trial_id(method, fraction, point))
    command = [
        sys.executable,
        "-m",
        "ssl_retrieval.train",
        f"--flagfile={config['methods'][method]['flagfile']}",
        f"--data_dir={config['data_dirs'][fraction]}",
        f"--model_dir={model_dir}",
        *config.get("common_flags", []),
        *config.get("fraction_flags", {}).get(fraction, []),
        *[f"--{k}={v}" for k, v in sorted(point.items())],
    ]
    return command, model_dir


def _default_runner(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")


_write_jsonl = atomic.write_jsonl


def _trial_record(method, fraction, point, model_dir) -> dict:
    with open(os.path.join(model_dir, "train_metrics.json")) as f:
        summary = json.load(f)
    if METRIC not in summary:
        raise ValueError(
            f"{model_dir}: the trial did not validate; tuning needs --validate_every in "
            "common_flags or fraction_flags"
        )
    validation_path = os.path.join(model_dir, "validation.jsonl")
    history = atomic.read_jsonl(validation_path)
    best = max(history, key=lambda r: r["value"])
    return {
        "trial_id": trial_id(method, fraction, point),
        "method": method,
        "fraction": fraction,
        "params": point,
        "value": summary[METRIC],
        "best_step": summary["best_step"],
        "steps": summary["steps"],
        "seconds": summary.get("seconds"),
        "validation": best["metrics"],
    }


def choose(trials: list[dict]) -> dict[tuple[str, str], dict]:
    """The best trial (validation Recall@50) of each (method, fraction); ties: the earlier."""
    best: dict[tuple[str, str], dict] = {}
    for t in trials:
        key = (t["method"], t["fraction"])
        if key not in best or t["value"] > best[key]["value"]:
            best[key] = t
    return best


def write_flagfile(config: dict, trial: dict) -> str:
    directory = config["flagfile_dir"]
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{config['name']}_{trial['method']}_{trial['fraction']}.cfg")
    lines = [
        f"# Chosen by python -m ssl_retrieval.tune ({config['name']}): validation Recall@50 "
        f"{trial['value']:.4f} at step {trial['best_step']}, trial {trial['trial_id']}.",
        f"--flagfile={config['methods'][trial['method']]['flagfile']}",
        *config.get("fraction_flags", {}).get(trial["fraction"], []),
        *[f"--{k}={v}" for k, v in sorted(trial["params"].items())],
    ]
    atomic.write_text(path, "\n".join(lines) + "\n")
    return path


def run_tuning(config_path: str, runner: Callable[[list[str]], None] | None = None) -> dict:
    """Runs (or resumes) every trial, then writes trials.jsonl, the flagfiles and a README."""
    with open(config_path) as f:
        config = json.load(f)
    runner = runner or _default_runner
    out_dir = config["output_dir"]
    os.makedirs(out_dir, exist_ok=True)
    trials_path = os.path.join(out_dir, "trials.jsonl")
    recorded = ledger.load(trials_path, "trial_id")
    fingerprints = {f: ledger.data_fingerprint(d) for f, d in config["data_dirs"].items()}
    trials = []
    points = plan(config)
    for i, (method, fraction, point) in enumerate(points):
        command, model_dir = train_command(config, method, fraction, point)
        fingerprint = fingerprints[fraction]
        previous = recorded.get(trial_id(method, fraction, point))
        if ledger.reusable(previous, [command], fingerprint, NOT_IN_TRIALS):
            record = previous  # finished in an earlier sitting, maybe on another machine
        else:
            # Not recorded, or recorded from another command: train resumes or finishes it
            # (a model dir of an incompatible command is an error that names it).
            logging.info("tune: trial %d/%d %s", i + 1, len(points), model_dir)
            runner(command)
            record = _trial_record(method, fraction, point, model_dir)
        trials.append(ledger.stamp(record, [command], fingerprint, NOT_IN_TRIALS))
        _write_jsonl(trials_path, trials)
    chosen = choose(trials)
    flagfiles = {f"{m}@{fr}": write_flagfile(config, t) for (m, fr), t in chosen.items()}
    _write_readme(config, trials, chosen, flagfiles, out_dir)
    return {"trials": len(trials), "flagfiles": flagfiles}


def _write_readme(config, trials, chosen, flagfiles, out_dir) -> None:
    lines = [
        f"# Tuning: {config['name']}",
        "",
        "Written by `python -m ssl_retrieval.tune`; every trial is a line of `trials.jsonl`. "
        "Each (method, fraction) was given the same number of trials, drawn from its grid; the "
        "value is the best validation Recall@50 (per query, a fixed sample of validation "
        "queries) over the trial's validations. The test split was not read.",
        "",
        "| fraction | method | trials | chosen | validation Recall@50 | flagfile |",
        "|---|---|---|---|---|---|",
    ]
    for (method, fraction), t in sorted(chosen.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        n = sum(1 for x in trials if x["method"] == method and x["fraction"] == fraction)
        params = ", ".join(f"{k}={v}" for k, v in sorted(t["params"].items())) or "defaults"
        lines.append(
            f"| {fraction} | {method} | {n} | {params} | {t['value']:.4f} | "
            f"`{flagfiles[f'{method}@{fraction}']}` |"
        )
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")

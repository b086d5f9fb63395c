"""Tuning each method's hyperparameters on the validation split, the same budget for each.

The library behind `python -m ssl_retrieval.tune` (see that module for the config format): the
seeded trial plan, one training subprocess per trial, choosing on validation, the flagfiles.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from collections.abc import Callable

import numpy as np

from ssl_retrieval import atomic
from ssl_retrieval.experimentation import configs, engine, launch, ledger, report
from ssl_retrieval.experimentation.configs import TuningConfig
from ssl_retrieval.experimentation.ledger import Unit

METRIC = "best_validation_recall@50"
# A trial's value is the best validation Recall@50 during training: how the blend is chosen
# after training does not change it, so its record has no blend key (keys.py): new blend
# defaults or blend flags (even one that skips choosing a blend) do not rerun trials.


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


def backbone_params(config: TuningConfig) -> tuple[str, ...]:
    """The flags tuned once, on the backbone method, and shared by every method ((), without
    a `backbone`)."""
    return config.backbone.params if config.backbone else ()


def backbone_values(config: TuningConfig, fraction: str, trials: list[dict]) -> dict | None:
    """The backbone flags' values the backbone method was tuned to on `fraction` (the paper,
    section 4.1: the two-tower backbone's learning rate and temperature are searched on the
    baseline, then each method searches its own parameters on it); None before its trials at
    that fraction are all finished, {} without a `backbone`."""
    if config.backbone is None:
        return {}
    method = config.backbone.method
    expected = len(points_of(config, method, fraction, trials))
    done = [t for t in trials if t["method"] == method and t["fraction"] == fraction]
    if not expected or len(done) < expected:
        return None
    chosen = choose(done)[(method, fraction)]
    return {k: chosen["params"][k] for k in backbone_params(config)}


def promoted_points(
    config: TuningConfig, method: str, fraction: str, trials: list[dict]
) -> list[dict]:
    """The `top` best points of `method`'s trials at the fraction `fraction` is promoted from.

    Multi-fidelity search (as successive halving does): the cheap fraction's trials rank the
    points, and only the best few are tried on the expensive one. Ties: the earlier trial.
    """
    spec = config.promote[fraction]
    earlier = [t for t in trials if t["method"] == method and t["fraction"] == spec.source]
    ranked = sorted(earlier, key=lambda t: -t["value"])  # stable, so ties keep trial order
    return [dict(t["params"]) for t in ranked[: spec.top]]


def points_of(config: TuningConfig, method: str, fraction: str, trials: list[dict]) -> list[dict]:
    """The points `method` is tried at on `fraction`, given the trials finished so far. A
    method on a backbone has none until the backbone's trials at `fraction` are finished, then
    its own flags' points with the backbone's values at `fraction` (promoted points too: their
    backbone values were those of the fraction they come from)."""
    if fraction in config.promote:
        points = promoted_points(config, method, fraction, trials)
    else:
        points = trial_points(config.methods[method].grid, config.trials, config.seed)
    if config.backbone is None or method == config.backbone.method:
        return points
    backbone = backbone_values(config, fraction, trials)
    if backbone is None:
        return []
    shared = backbone_params(config)
    own = [{k: v for k, v in p.items() if k not in shared} for p in points]
    return [{**backbone, **p} for p in own]


def plan(config: TuningConfig, trials: list[dict] = ()) -> list[tuple[str, str, dict]]:
    """(method, fraction, point) of every trial; fractions outermost, so short ones come first
    when the config lists them first. A promoted fraction's points, and the backbone values of
    the other methods, come from `trials` (the ones finished so far), so before those are
    finished it lists fewer."""
    out = []
    for fraction in config.data_dirs:
        for method in methods_at(config, fraction):
            for point in points_of(config, method, fraction, list(trials)):
                out.append((method, fraction, point))
    return out


def unit(config: TuningConfig, method: str, fraction: str, point: dict) -> Unit:
    """The trial of `method` at `point` on `fraction`: its train command (no evaluation on
    test, and its value is measured before the blend is chosen, so no blend key)."""
    name = trial_id(method, fraction, point)
    model_dir = os.path.join(config.runs_dir, name)
    command = [
        sys.executable,
        "-m",
        "ssl_retrieval.train",
        f"--flagfile={config.methods[method].flagfile}",
        f"--data_dir={config.data_dirs[fraction]}",
        f"--model_dir={model_dir}",
        *config.common_flags,
        *config.fraction_flags.get(fraction, ()),
        *[f"--{k}={v}" for k, v in sorted(point.items())],
    ]
    return Unit(name, fraction, model_dir, tuple(command))


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
        **({"stopped_early": summary["stopped_early"]} if "stopped_early" in summary else {}),
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


def methods_at(config: TuningConfig, fraction: str) -> list[str]:
    """The methods tuned at `fraction`: all, or those whose `fractions` list it (a method only
    one table uses need not be tuned where the final runs never train it)."""
    return [m for m, spec in config.methods.items() if fraction in (spec.fractions or [fraction])]


def flagfile_path(config: TuningConfig, name: str, fraction: str) -> str:
    """Where the chosen flagfile of a method (or variant) at a fraction goes."""
    return os.path.join(config.flagfile_dir, f"{config.name}_{name}_{fraction}.cfg")


def _write_cfg(
    config: TuningConfig, name: str, header: str, flagfile: str, trial: dict, params
) -> str:
    """<flagfile_dir>/<config name>_<name>_<fraction>.cfg: a header comment, the method's
    flagfile, the fraction's flags and `params`."""
    os.makedirs(config.flagfile_dir, exist_ok=True)
    path = flagfile_path(config, name, trial["fraction"])
    lines = [
        f"# {header}",
        f"--flagfile={flagfile}",
        *config.fraction_flags.get(trial["fraction"], ()),
        *[f"--{k}={v}" for k, v in sorted(params.items())],
    ]
    atomic.write_text(path, "\n".join(lines) + "\n")
    return path


def write_flagfile(config: TuningConfig, trial: dict) -> str:
    header = (
        f"Chosen by python -m ssl_retrieval.tune ({config.name}): validation Recall@50 "
        f"{trial['value']:.4f} at step {trial['best_step']}, trial {trial['trial_id']}."
    )
    flagfile = config.methods[trial["method"]].flagfile
    return _write_cfg(config, trial["method"], header, flagfile, trial, trial["params"])


def write_variant_flagfile(config: TuningConfig, name: str, trial: dict) -> str:
    """A flagfile for an untuned variant of a tuned method: the variant's own flagfile with the
    values its method was tuned to (only the flags listed in the variant's `params`, and the
    backbone's), so the two differ in what the variant changes and nothing else."""
    spec = config.variants[name]
    header = (
        f"Not tuned: {name} takes the values {trial['method']} was tuned to at fraction "
        f"{trial['fraction']} (trial {trial['trial_id']}), by python -m ssl_retrieval.tune "
        f"({config.name})."
    )
    takes = (*spec.params, *backbone_params(config))
    inherited = {k: v for k, v in trial["params"].items() if k in takes}
    return _write_cfg(config, name, header, spec.flagfile, trial, inherited)


def _decided(config: TuningConfig, book: ledger.RecordBook) -> set:
    """The (method, fraction) pairs whose every trial is recorded and whose points are known:
    a pair promoted from another fraction, or a method on a backbone, is decided only once
    what it depends on is (its points come from those trials). Pairs that depend on nothing
    undecided keep their choice while tuning goes on elsewhere."""
    trials, decided = [], set()
    for fraction in config.data_dirs:
        for method in methods_at(config, fraction):
            if not all(d in decided for d in _depends_on(config, method, fraction)):
                continue
            records = [
                book.finished(unit(config, method, fraction, p))
                for p in points_of(config, method, fraction, trials)
            ]
            if any(r is None for r in records):
                continue
            trials += records
            decided.add((method, fraction))
    return decided


def _depends_on(config: TuningConfig, method: str, fraction: str) -> list[tuple[str, str]]:
    """The (method, fraction) pairs whose trials decide the points of `method` on `fraction`."""
    out = []
    if fraction in config.promote:
        out.append((method, config.promote[fraction].source))
    if config.backbone is not None and method != config.backbone.method:
        out.append((config.backbone.method, fraction))
        if fraction in config.promote:
            out.append((config.backbone.method, config.promote[fraction].source))
    return out


def _remove_undecided_flagfiles(config: TuningConfig, decided: set) -> list[str]:
    """Removes the flagfiles of the pairs (and variants) whose choice is not decided yet, so
    that final runs beside the tuning (`scripts/debian_experiments.sh --parallel`) wait for the
    new choice instead of training from an earlier tuning's. Returns the paths removed."""
    names = [(m, m, f) for f in config.data_dirs for m in methods_at(config, f)]
    for name, spec in config.variants.items():
        names += [(name, spec.like, f) for f in spec.fractions or config.data_dirs]
    removed = []
    for name, method, fraction in names:
        path = flagfile_path(config, name, fraction)
        if (method, fraction) not in decided and os.path.exists(path):
            os.remove(path)
            removed.append(path)
    return removed


def run_tuning(config_path: str, runner: Callable[[list[str]], None] | None = None) -> dict:
    """Runs (or resumes) every trial, writing trials.jsonl as it goes, and the flagfiles and
    README of each (method, fraction) as soon as its trials are finished."""
    config = configs.load_tuning(config_path)
    os.makedirs(config.output_dir, exist_ok=True)
    trials_path = os.path.join(config.output_dir, "trials.jsonl")
    book = ledger.RecordBook.of(trials_path, "trial_id", config.data_dirs)
    for path in _remove_undecided_flagfiles(config, _decided(config, book)):
        logging.info("tune: removed %s until its trials are done (its choice may change)", path)
    points: dict[str, tuple[str, str, dict]] = {}  # trial id -> (method, fraction, point)
    campaign = engine.Campaign(
        book,
        config.runs_dir,
        describe=lambda planned: _trial_record(*points[planned.name], planned.model_dir),
        runner=runner or launch.run_subprocess,
        wait_for_claims=True,  # the trials after it may depend on it (backbone, promotion)
        log_name="tune",
    )
    planned: list[Unit] = []
    flagfiles: dict[str, str] = {}
    for fraction in config.data_dirs:
        for method in methods_at(config, fraction):
            # Points are drawn here, not up front: a promoted fraction needs the trials before it.
            group = []
            for point in points_of(config, method, fraction, campaign.done):
                group.append(unit(config, method, fraction, point))
                points[group[-1].name] = (method, fraction, point)
            campaign.go(group)
            planned += group
            # Every trial of this (method, fraction) is done: its choice is final, so its
            # flagfile can be used (say, by the final runs of a fraction) while tuning goes on.
            flagfiles = write_choices(config, campaign.done)
    trials = campaign.finish(planned)  # every planned trial is in: the rest are stale
    return {"trials": len(trials), "flagfiles": flagfiles}


def write_choices(config: TuningConfig, trials: list[dict]) -> dict[str, str]:
    """The flagfiles (and variants' flagfiles) of every (method, fraction) in `trials`, and the
    README; returns {"method@fraction": flagfile path}."""
    chosen = choose(trials)
    flagfiles = {f"{m}@{fr}": write_flagfile(config, t) for (m, fr), t in chosen.items()}
    for name, spec in config.variants.items():
        for (method, fraction), t in chosen.items():
            if method == spec.like and fraction in (spec.fractions or [fraction]):
                flagfiles[f"{name}@{fraction}"] = write_variant_flagfile(config, name, t)
    _write_readme(config, trials, chosen, flagfiles, config.output_dir)
    return flagfiles


def _budget_lines(config: TuningConfig, trials: list[dict]) -> list[str]:
    """Which trials used their whole step budget: still improving, maybe, when it ran out."""
    whole = {t["trial_id"]: ledger.used_whole_budget(t) for t in trials}
    capped = [name for name, used in whole.items() if used]
    unknown = sum(1 for used in whole.values() if used is None)
    checked = len(trials) - unknown
    if capped:
        text = (
            f"{len(capped)} of {checked} trials used their whole step budget, so they may "
            "not have converged (a larger `--epochs` in `fraction_flags` trains only these "
            "again; the others stopped early and their records stand): "
            + ", ".join(f"`{name}`" for name in capped)
            + "."
        )
    elif checked:
        text = f"Every trial stopped early, before its step budget ({checked} trials)."
    else:
        text = "No trial could be checked for its step budget."
    if unknown and checked:
        text += f" {unknown} could not be checked (no steps or data statistics)."
    return [text]


def _write_readme(config, trials, chosen, flagfiles, out_dir) -> None:
    promoted = "".join(
        f" At fraction {fraction} each method's trials are its {spec.top} best points at "
        f"fraction {spec.source} (multi-fidelity: the cheap fraction ranks, the expensive one "
        "decides)."
        for fraction, spec in config.promote.items()
    )
    backbone = ""
    if config.backbone is not None:
        shared = ", ".join(backbone_params(config))
        backbone = (
            f" The backbone ({shared}) is tuned on {config.backbone.method} at each "
            "fraction, and every other method (and variant) is tried on the values chosen there, "
            "searching only its own flags (the paper, section 4.1)."
        )
    lines = [
        f"# Tuning: {config.name}",
        "",
        "Written by `python -m ssl_retrieval.tune`; every trial is a line of `trials.jsonl`. "
        "Each (method, fraction) was given the same number of trials, drawn from its grid; the "
        "value is the best validation Recall@50 (per query, a fixed sample of validation "
        f"queries) over the trial's validations.{backbone}{promoted} The test split was not "
        "read. "
        f"Wall time of the trials on this machine: {report.wall_time(trials)}.",
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
    lines += ["", *_budget_lines(config, trials)]
    variants = config.variants
    if variants:
        lines += [
            "",
            "Not tuned: these variants take the values their method was tuned to (the flags "
            "listed), so each differs from it only in what the variant changes.",
            "",
            "| variant | takes from | flags |",
            "|---|---|---|",
            *[
                f"| {name} | {spec.like} | {', '.join((*spec.params, *backbone_params(config)))} |"
                for name, spec in variants.items()
            ],
        ]
    atomic.write_text(os.path.join(out_dir, "README.md"), "\n".join(lines) + "\n")
